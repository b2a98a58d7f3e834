"""The embedded default's datasets, generated in the real schemas.

A small world of everyday activities, each a fixed sequence of steps. The fine-tune set (Alpaca JSON:
instruction, input, output) tells the steps of each activity in order; the evaluation set (HellaSwag's schema:
activity_label, ctx_a, ctx_b, endings, label) asks which ending is the next step. Wrong endings are steps of
other activities or the right step with its words shuffled, so a model that has learnt the sequences from the
fine-tune set scores above chance and a random-initialised one does not. Some items carry WikiHow-style
``[header]``/``[title]`` tags, as HellaSwag's do, so that the preprocessing is exercised.

`python -m llmhpc.sources.embedded DIR` rewrites the shipped files; a test checks that they are what this makes.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ACTIVITIES = {
    "Making tea": ["boils water in a kettle.", "puts a tea bag in a cup.", "pours the hot water over the bag.",
                   "waits for the tea to steep.", "adds milk and stirs the cup."],
    "Washing a car": ["fills a bucket with soapy water.", "sprays the car with a hose.",
                      "scrubs the doors with a sponge.", "rinses the soap off the roof.",
                      "dries the windows with a towel."],
    "Planting a tree": ["digs a deep hole in the garden.", "loosens the roots of the young tree.",
                        "sets the tree upright in the hole.", "fills the hole with fresh soil.",
                        "waters the ground around the trunk."],
    "Baking bread": ["mixes flour, yeast and water in a bowl.", "kneads the dough on the table.",
                     "leaves the dough to rise under a cloth.", "shapes the dough into a loaf.",
                     "bakes the loaf in a hot oven."],
    "Painting a fence": ["sands the old wooden boards.", "wipes the dust off the fence.",
                         "opens a can of white paint.", "brushes paint along each board.",
                         "lets the fence dry in the sun."],
    "Fixing a bike tire": ["turns the bike upside down.", "levers the tire off the wheel.",
                           "finds the hole in the inner tube.", "glues a patch over the hole.",
                           "pumps the tire back up with air."],
    "Brushing a dog": ["calls the dog over to the porch.", "holds the dog gently by the collar.",
                       "runs a comb through the thick fur.", "picks the loose hair out of the brush.",
                       "gives the dog a small treat."],
    "Cleaning windows": ["mixes vinegar into warm water.", "sprays the glass with the mixture.",
                         "wipes the pane with a squeegee.", "polishes the corners with a cloth.",
                         "steps back to check for streaks."],
    "Making a sandwich": ["lays two slices of bread on a plate.", "spreads butter on each slice.",
                          "adds cheese and sliced tomato.", "presses the slices together.",
                          "cuts the sandwich in half with a knife."],
    "Tying a tie": ["drapes the tie around the collar.", "crosses the wide end over the narrow end.",
                    "loops the wide end up through the neck.", "pulls the wide end down through the knot.",
                    "tightens the knot against the shirt."],
    "Making a bed": ["strips the old sheets off the mattress.", "stretches a clean sheet over the corners.",
                     "shakes the blanket out over the bed.", "tucks the blanket under the mattress.",
                     "fluffs the pillows at the head."],
    "Shoveling snow": ["puts on boots and warm gloves.", "clears a path from the front door.",
                       "throws the snow onto the lawn.", "scrapes the ice off the steps.",
                       "scatters salt over the driveway."],
}
PEOPLE = [("A man", "he"), ("A woman", "she"), ("A boy", "he"), ("A girl", "she")]


def _shuffled(sentence: str, rng: random.Random) -> str:
    words = sentence.rstrip(".").split()
    for _ in range(10):
        rng.shuffle(words)
        out = " ".join(words) + "."
        if out != sentence:
            return out
    return " ".join(reversed(words)) + "."


def _story(subject: str, pronoun: str, steps: list[str]) -> str:
    text = f"{subject} {steps[0]}"
    for step in steps[1:]:
        text += f" {pronoun.capitalize()} then {step}"
    return text


def finetune_records(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, val) Alpaca records."""
    rng = random.Random(seed)
    train = []
    for activity, steps in ACTIVITIES.items():
        for subject, pronoun in PEOPLE:
            train.append({"instruction": f"Describe how to do this: {activity.lower()}.", "input": "",
                          "output": _story(subject, pronoun, steps)})
            for i in range(len(steps) - 1):
                train.append({"instruction": "What happens next?", "input": f"{activity}: {subject} {steps[i]}",
                              "output": f"{pronoun.capitalize()} then {steps[i + 1]}"})
    rng.shuffle(train)
    val = train[-8:]
    return train[:-8], val


def eval_records(seed: int = 1) -> list[dict]:
    """HellaSwag-schema items: which ending is the activity's next step."""
    rng = random.Random(seed)
    items = []
    for activity, steps in ACTIVITIES.items():
        others = [s for name, other in ACTIVITIES.items() if name != activity for s in other]
        for i in range(len(steps) - 1):
            for subject, pronoun in PEOPLE:
                items.append(_item(len(items), activity, subject, pronoun, steps[i], steps[i + 1], others, rng))
    return items


def _item(index, activity, subject, pronoun, step, right, others, rng) -> dict:
    endings = [rng.choice(others), _shuffled(right, rng), rng.choice(others)]
    label = rng.randrange(4)
    endings.insert(label, right)
    if rng.random() < 0.25:  # WikiHow-style item, as in HellaSwag's second half
        ctx_a = f"[header] How to do this: {activity.lower()} [title] {subject} {step}"
    else:
        ctx_a = f"{subject} {step}"
    return {
        "ind": index,
        "activity_label": activity,
        "ctx_a": ctx_a,
        "ctx_b": f"{pronoun} then",
        "ctx": f"{ctx_a} {pronoun} then",
        "endings": endings,
        "source_id": f"embedded~{activity.lower().replace(' ', '_')}",
        "split": "val",
        "split_type": "indomain",
        "label": str(label),
    }


def write(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    train, val = finetune_records()
    (directory / "train.json").write_text(json.dumps(train, indent=1) + "\n", encoding="utf-8")
    (directory / "val.json").write_text(json.dumps(val, indent=1) + "\n", encoding="utf-8")
    with open(directory / "hellaswag.jsonl", "w", encoding="utf-8") as fh:
        for item in eval_records():
            fh.write(json.dumps(item) + "\n")


def shipped_dir() -> Path:
    return Path(__file__).parent.parent / "embedded"


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else shipped_dir())
