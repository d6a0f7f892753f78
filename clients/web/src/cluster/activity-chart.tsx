/** Throughput per bucket (bars) and the 90th percentile queue wait (line) over the server's window. */
import { formatSeconds } from "../format";
import { formatWindow, type ActivityPoint } from "./activity";
import { niceMax } from "./queue-chart";
import { useElementWidth } from "./use-element-width";

const HEIGHT = 200;
const PAD = { left: 40, right: 52, top: 12, bottom: 28 };

export interface ActivityChartProps {
  points: readonly ActivityPoint[];
  windowSeconds: number;
}

/** waitScale is the right axis' top: a round number of seconds at or above the longest p90. */
export function waitScale(points: readonly ActivityPoint[]): number {
  const longest = Math.max(0, ...points.map((point) => point.p90Wait ?? 0));
  if (longest <= 1) return 1;
  return niceMax(longest);
}

export function ActivityChart({ points, windowSeconds }: ActivityChartProps) {
  const [figure, width] = useElementWidth<HTMLElement>(640);
  const plotWidth = Math.max(240, width);
  const innerWidth = plotWidth - PAD.left - PAD.right;
  const innerHeight = HEIGHT - PAD.top - PAD.bottom;
  const maxCompleted = niceMax(Math.max(0, ...points.map((point) => point.completed)));
  const maxWait = waitScale(points);
  const slot = points.length > 0 ? innerWidth / points.length : innerWidth;
  const waited = points.flatMap((point, index) =>
    point.p90Wait === undefined
      ? []
      : [
          {
            x: (PAD.left + slot * (index + 0.5)).toFixed(1),
            y: (PAD.top + innerHeight * (1 - point.p90Wait / maxWait)).toFixed(1),
          },
        ],
  );
  const total = points.reduce((sum, point) => sum + point.completed, 0);
  const summary = `Evaluations completed per ${formatWindow(windowSeconds / Math.max(1, points.length))} over the last ${formatWindow(windowSeconds)} (${total} in all), and the 90th percentile queue wait.`;
  return (
    <figure className="activity-chart" ref={figure}>
      <svg
        width={plotWidth}
        height={HEIGHT}
        viewBox={`0 0 ${plotWidth} ${HEIGHT}`}
        role="img"
        aria-label={summary}
        data-testid="activity-chart"
      >
        <title>{summary}</title>
        {[0, maxCompleted / 2, maxCompleted].map((tick) => {
          const y = PAD.top + innerHeight * (1 - tick / maxCompleted);
          return (
            <g key={tick} className="chart-grid">
              <line x1={PAD.left} x2={plotWidth - PAD.right} y1={y} y2={y} />
              <text x={PAD.left - 6} y={y + 4} textAnchor="end">
                {tick}
              </text>
              <text x={plotWidth - PAD.right + 6} y={y + 4}>
                {formatSeconds((maxWait * tick) / maxCompleted)}
              </text>
            </g>
          );
        })}
        {points.map((point, index) => {
          const height = innerHeight * (point.completed / maxCompleted);
          return (
            <rect
              key={point.at}
              className="activity-bar"
              x={PAD.left + slot * index + 1}
              y={PAD.top + innerHeight - height}
              width={Math.max(1, slot - 2)}
              height={height}
            />
          );
        })}
        {waited.length > 1 ? (
          <polyline className="chart-line activity-wait" points={waited.map((p) => `${p.x},${p.y}`).join(" ")} />
        ) : null}
        {waited.map((p) => (
          <circle key={p.x} className="chart-dot activity-wait" cx={p.x} cy={p.y} r={2.5} />
        ))}
        <text className="chart-axis" x={PAD.left} y={HEIGHT - 8}>
          {formatWindow(windowSeconds)} ago
        </text>
        <text className="chart-axis" x={plotWidth - PAD.right} y={HEIGHT - 8} textAnchor="end">
          now
        </text>
      </svg>
      <figcaption className="chart-legend">
        <span className="legend-item activity-completed">
          <span className="legend-swatch" aria-hidden="true" />
          completed (left axis)
        </span>
        <span className="legend-item activity-wait">
          <span className="legend-swatch" aria-hidden="true" />
          p90 queue wait (right axis)
        </span>
      </figcaption>
    </figure>
  );
}
