export { cluster, evaluations, type ClusterClient, type EvaluationClient } from "./clients";
export { isAbort, toProblem, type FieldViolation, type RpcProblem } from "./rpc-problem";
