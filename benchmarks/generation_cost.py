"""What evaluation by generation costs: the default trial with answers at every evaluation,
with answers for part of the validation split, and with the loss alone.

The same untuned default trial of spaces/lora.yaml (240 steps, an evaluation every 20) is run
three ways, alternating, median of the repetitions:

- accuracy: the study metric is eval_accuracy (the default): every evaluation answers all 120
  validation prompts greedily; the final evaluation answers the validation and test splits;
- subset: the same, with evaluation.max_eval_examples 30 during training;
- loss: the study metric is eval_loss: evaluations compute the loss only, the final one also
  answers the test split (for the comparison).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import _common
from training_loop import objective_trial

VARIANTS = ["accuracy", "subset", "loss"]


def main() -> None:
    parse = _common.parser(__doc__.splitlines()[0])
    args = parse.parse_args()
    studies = _common.setup("generation_cost")
    from search.space import load_space

    space = load_space("lora.yaml")
    params = space.baseline_params()
    steps = 60 if args.quick else None
    variants: dict[str, tuple[Any, Any]] = {}
    for name in VARIANTS:
        variant = copy.deepcopy(space)
        overrides: dict[str, Any] = {"training.max_steps": steps} if steps else {}
        if name == "subset":
            overrides["evaluation.max_eval_examples"] = 30
        if name == "loss":
            variant.head.study.metric, variant.head.study.direction = "eval_loss", "minimize"
        variants[name] = (variant, variant.trial_config({**params, **overrides}))
    space.objective.prepared(variants["loss"][1], studies / "prepared")

    reps: list[dict[str, Any]] = [{"rep": rep} for rep in range(args.reps)]
    for number, (rep, name) in enumerate(_common.alternating(args.reps, VARIANTS), start=1):
        variant, config = variants[name]
        reps[rep][name] = objective_trial(variant, config, studies, number)
        print(f"  rep {rep} {name:<9} {reps[rep][name]['wall_s']:.1f} s", flush=True)

    def med(name: str, key: str) -> float:
        return _common.median([r[name][key] for r in reps])

    def evaluation(name: str) -> float:
        return _common.median([r[name]["outside"]["evaluation"] for r in reps])

    base = med("loss", "wall_s")
    rows = [[name, med(name, "wall_s"), evaluation(name), med(name, "wall_s") / base]
            for name in VARIANTS]
    print(f"\nmedian of {args.reps} alternating repetitions, "
          f"{variants['loss'][1].training.max_steps} steps a trial")
    print(_common.table(["variant", "trial wall s", "evaluation s", "vs loss only"], rows))
    figures = {name: {"trial_wall_s": med(name, "wall_s"), "evaluation_s": evaluation(name),
                      "vs_loss_only": med(name, "wall_s") / base} for name in VARIANTS}
    figures["accuracy_extra_s"] = med("accuracy", "wall_s") - base
    settings = {"steps": variants["loss"][1].training.max_steps, "reps": args.reps,
                "threads": max(1, math.floor(space.head.resources.cpu))}
    notes = ["each trial loads its base model anew (a worker's first trial)"]
    print(f"\nwrote {_common.write('generation_cost', settings, figures, reps, notes)}")


if __name__ == "__main__":
    main()
