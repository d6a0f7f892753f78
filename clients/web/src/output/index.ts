export { loadOutput, saveOutput, type CachedOutput } from "./output-cache";
export { escapeOutput, type Segment } from "./output-text";
export { OutputView, type OutputViewProps } from "./output-view";
export { StreamBuffer, type AppendResult } from "./stream-buffer";
