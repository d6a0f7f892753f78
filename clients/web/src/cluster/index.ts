export { ClusterPage } from "./cluster-page";
export { QueueChart, niceMax } from "./queue-chart";
export { addSample, sampleOf, type QueueSample } from "./queue-history";
