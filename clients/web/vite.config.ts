// Vite builds the UI into dist/, which the Envoy edge serves on the same origin as the API.
// `npm run dev` proxies the API to a running edge (EVALMESH_EDGE, default the local mesh's 8080).
import react from "@vitejs/plugin-react";
import { defineConfig } from "vitest/config";

const edge = process.env["EVALMESH_EDGE"] ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: true,
    chunkSizeWarningLimit: 1024,
  },
  server: {
    proxy: {
      "/evalmesh.v1.": { target: edge, changeOrigin: true },
    },
  },
  test: {
    // Pure specs run in Node; specs that need a DOM say so with a @vitest-environment jsdom docblock.
    environment: "node",
    include: ["src/**/*.spec.{ts,tsx}"],
    setupFiles: ["src/test-setup.ts"],
    restoreMocks: true,
    clearMocks: true,
  },
});
