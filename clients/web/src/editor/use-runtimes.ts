import type { Runtime } from "@evalmesh/proto/evalmesh/v1/cluster_pb";
import { useEffect, useState } from "react";

import { cluster, isAbort } from "../api";

export interface RuntimeOption {
  name: string;
  label: string;
}

const FALLBACK: RuntimeOption[] = [
  { name: "python", label: "python" },
  { name: "python-ml", label: "python-ml" },
];

function option(runtime: Runtime): RuntimeOption {
  const version = runtime.version ? ` ${runtime.version}` : "";
  const offered =
    runtime.executorCount > 0
      ? `${runtime.executorCount} executor${runtime.executorCount === 1 ? "" : "s"}`
      : "no executor offers it now";
  return { name: runtime.name, label: `${runtime.name}${version} (${offered})` };
}

/** useRuntimes lists the runtimes the cluster offers, falling back to the standard two. */
export function useRuntimes(): RuntimeOption[] {
  const [options, setOptions] = useState(FALLBACK);
  useEffect(() => {
    const controller = new AbortController();
    cluster.listRuntimes({}, { signal: controller.signal }).then(
      (reply) => {
        if (reply.runtimes.length > 0) setOptions(reply.runtimes.map(option));
      },
      (error: unknown) => {
        if (!isAbort(error)) setOptions(FALLBACK); // the form still works with the standard names
      },
    );
    return () => controller.abort();
  }, []);
  return options;
}
