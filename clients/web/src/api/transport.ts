/**
 * The one gRPC-web transport of the app, created once at module scope. It talks to the page's own
 * origin, where the Envoy edge serves both this UI and the API, and adds the signed-in API key to
 * every call. A call answered UNAUTHENTICATED signs the tab out (the key was revoked or is wrong).
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { apiKeyStore } from "../session/api-key-store";

const authorize: Interceptor = (next) => async (request) => {
  const key = apiKeyStore.get();
  if (key) request.header.set("authorization", `Bearer ${key}`);
  try {
    return await next(request);
  } catch (error) {
    if (key && ConnectError.from(error).code === Code.Unauthenticated && apiKeyStore.get() === key) {
      apiKeyStore.clear("expired");
    }
    throw error;
  }
};

export const transport = createGrpcWebTransport({
  baseUrl: window.location.origin,
  interceptors: [authorize],
});
