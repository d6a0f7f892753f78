export { buildRequest, placeViolations, type FormValues } from "./evaluation-form";
export { EXAMPLES, type Example } from "./examples";
export { NewEvaluationPage } from "./new-evaluation-page";
