export { downloadBytes } from "./download";
export { ProblemBanner, type ProblemBannerProps } from "./problem-banner";
export { StateBadge } from "./state-badge";
export { useDebounced } from "./use-debounced";
export { useNow } from "./use-now";
