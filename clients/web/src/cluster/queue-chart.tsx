/** A small SVG line chart of queue depth per priority over time; no chart library needed. */
import { Priority } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";

import { PRIORITY_NAMES, formatSeconds } from "../format";
import type { ChartPriority, QueueSample } from "./queue-history";
import { useElementWidth } from "./use-element-width";

const HEIGHT = 220;
const PAD = { left: 40, right: 14, top: 12, bottom: 28 };
/** The x axis shows at least this much time, so a page opened a moment ago is not all edge. */
const MIN_SPAN_MS = 60_000;

export const SERIES: readonly { priority: ChartPriority; className: string }[] = [
  { priority: Priority.HIGH, className: "series-high" },
  { priority: Priority.NORMAL, className: "series-normal" },
  { priority: Priority.LOW, className: "series-low" },
];

/** niceMax rounds a maximum up to 1, 2 or 5 times a power of ten (at least 4), for round ticks. */
export function niceMax(value: number): number {
  if (value <= 4) return 4;
  const power = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 5, 10].find((factor) => factor * power >= value) ?? 10;
  return step * power;
}

/** chartSpan is the time the x axis covers: the samples' own span, within 1 minute and ``maxMs``. */
export function chartSpan(samples: readonly QueueSample[], maxMs: number): number {
  const first = samples[0];
  const last = samples[samples.length - 1];
  const covered = first && last ? last.at - first.at : 0;
  return Math.min(maxMs, Math.max(MIN_SPAN_MS, covered));
}

export interface Plot {
  width: number;
  height: number;
  max: number;
  spanMs: number;
}

/** linePoints maps the samples of one series to "x,y" points inside the plot area. */
export function linePoints(samples: readonly QueueSample[], priority: ChartPriority, plot: Plot): string {
  const last = samples[samples.length - 1];
  if (!last) return "";
  const plotWidth = plot.width - PAD.left - PAD.right;
  const plotHeight = plot.height - PAD.top - PAD.bottom;
  return samples
    .map((sample) => {
      const x = PAD.left + plotWidth * (1 - (last.at - sample.at) / plot.spanMs);
      const y = PAD.top + plotHeight * (1 - sample.depth[priority] / plot.max);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(" ");
}

export interface QueueChartProps {
  samples: readonly QueueSample[];
  /** maxSpanMs is the longest time the chart shows. */
  maxSpanMs: number;
}

export function QueueChart({ samples, maxSpanMs }: QueueChartProps) {
  const [figure, width] = useElementWidth<HTMLElement>(640);
  const latest = samples[samples.length - 1];
  const plot: Plot = {
    width: Math.max(240, width),
    height: HEIGHT,
    max: niceMax(Math.max(0, ...samples.flatMap((sample) => SERIES.map((series) => sample.depth[series.priority])))),
    spanMs: chartSpan(samples, maxSpanMs),
  };
  const spanText = formatSeconds(Math.round(plot.spanMs / 1000));
  const summary = latest
    ? `Queue depth per priority over the last ${spanText}. Now: ${SERIES.map((series) => `${PRIORITY_NAMES[series.priority]} ${latest.depth[series.priority]}`).join(", ")}.`
    : "Queue depth per priority: no samples yet.";
  const plotHeight = plot.height - PAD.top - PAD.bottom;
  return (
    <figure className="queue-chart" ref={figure}>
      <svg
        width={plot.width}
        height={plot.height}
        viewBox={`0 0 ${plot.width} ${plot.height}`}
        role="img"
        aria-label={summary}
        data-testid="queue-chart"
      >
        <title>{summary}</title>
        {[0, plot.max / 2, plot.max].map((tick) => {
          const y = PAD.top + plotHeight * (1 - tick / plot.max);
          return (
            <g key={tick} className="chart-grid">
              <line x1={PAD.left} x2={plot.width - PAD.right} y1={y} y2={y} />
              <text x={PAD.left - 6} y={y + 4} textAnchor="end">
                {tick}
              </text>
            </g>
          );
        })}
        <text className="chart-axis" x={PAD.left} y={plot.height - 8}>
          {spanText} ago
        </text>
        <text className="chart-axis" x={plot.width - PAD.right} y={plot.height - 8} textAnchor="end">
          now
        </text>
        {SERIES.map((series) => {
          const points = linePoints(samples, series.priority, plot);
          if (samples.length > 1) {
            return (
              <polyline
                key={series.priority}
                className={`chart-line ${series.className}`}
                points={points}
                data-priority={PRIORITY_NAMES[series.priority]}
              />
            );
          }
          const [x, y] = points.split(",");
          return samples.length === 1 ? (
            <circle key={series.priority} className={`chart-dot ${series.className}`} cx={x} cy={y} r={3} />
          ) : null;
        })}
      </svg>
      <figcaption className="chart-legend">
        {SERIES.map((series) => (
          <span
            key={series.priority}
            className={`legend-item ${series.className}`}
            data-testid={`queue-depth-${PRIORITY_NAMES[series.priority].toLowerCase()}`}
          >
            <span className="legend-swatch" aria-hidden="true" />
            {PRIORITY_NAMES[series.priority]}: {latest ? latest.depth[series.priority] : "–"} queued
          </span>
        ))}
      </figcaption>
    </figure>
  );
}
