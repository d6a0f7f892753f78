export { cluster, evaluations, type ClusterClient, type EvaluationClient } from "./clients";
export { type FieldViolation } from "./rpc-error-details";
export { isAbort, toProblem, type RpcProblem } from "./rpc-problem";
