import type { Evaluation_State as State } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";

import { STATE_NAMES, stateTone } from "../format";

/** StateBadge shows an evaluation state as a coloured label with its name in words. */
export function StateBadge({ state }: { state: State }) {
  return (
    <span className={`badge badge-${stateTone(state)}`} data-state={STATE_NAMES[state]}>
      {STATE_NAMES[state]}
    </span>
  );
}
