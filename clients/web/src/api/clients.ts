/** Clients built from the generated service descriptors, all on the one transport. */
import { createClient, type Client } from "@connectrpc/connect";
import { ClusterService } from "@evalmesh/proto/evalmesh/v1/cluster_service_pb";
import { EvaluationService } from "@evalmesh/proto/evalmesh/v1/evaluation_service_pb";

import { transport } from "./transport";

export type EvaluationClient = Client<typeof EvaluationService>;
export type ClusterClient = Client<typeof ClusterService>;

export const evaluations: EvaluationClient = createClient(EvaluationService, transport);
export const cluster: ClusterClient = createClient(ClusterService, transport);
