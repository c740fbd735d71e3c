"""The paper's two tasks on real models (docs/real-models.md §2).

- ``geneval`` (composition, Table 1): prompts in GenEval's metadata format, generated from GenEval's templates
  over the 80 COCO classes (tafs.tasks.geneval_prompts; offline, deterministic); training prompts share no object
  pair, class-colour, class-count or single class with a test prompt.
  Trained on the GenEval partial score + PickScore + CLIP + HPSv2.1 (the paper's mix); GenEval strict accuracy
  (overall = the mean over its six tags, as GenEval's summary_scores.py computes it), PickScore, CLIP and
  HPSv2.1 in-domain; ImageReward and UnifiedReward out-of-domain.
  Its test split is GenEval's official 553 prompts, reproduced from the templates (tests/test_geneval_reward.py
  checks them against the sha256 of GenEval's evaluation_metadata.jsonl); evaluate with
  ``eval: {per_category: null, images_per_prompt: 4}`` for GenEval's own protocol (4 images a prompt).
- ``pickapic`` (human preference, Tables 2-7, Figure 4): Flow-GRPO's Pick-a-Pic split, 25,432 train / 2,048 test
  prompts (dataset/pickscore/{train,test}.txt pinned by commit and sha256). Trained on PickScore + CLIP
  (in-domain); HPSv2.1, ImageReward and UnifiedReward out-of-domain.

A user task under ``tasks:`` with the same name shadows any of these (e.g. a local copy of the prompt files).
"""

from __future__ import annotations

from tafs.datafiles import RemoteFile
from tafs.tasks.base import MetricSpec, TaskSpec

FLOW_GRPO = "https://raw.githubusercontent.com/yifan123/flow_grpo/ac4c86e8cae021841f1fde853d340e0db67690dd/dataset"
PICKAPIC_FILES = {
    "train": RemoteFile(f"{FLOW_GRPO}/pickscore/train.txt",
                        "2f425adcbb9a6d0feee7c6c448e1cb83a1f71deca9434b803907e2578eca837f"),
    "test": RemoteFile(f"{FLOW_GRPO}/pickscore/test.txt",
                       "d75c025fa451866e70f7e36243f7cdd93095523cb51f5f9651f2ce3236d20262"),
}
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

PICKSCORE = MetricSpec("pickscore", "pickscore", "in", "PickScore")
CLIP = MetricSpec("clip", "clip", "in", "CLIP")
HPS_IN = MetricSpec("hpsv2", "hpsv2", "in", "HPS-v2.1")
HPS_OUT = MetricSpec("hpsv2", "hpsv2", "out", "HPS-v2.1")
IMAGEREWARD = MetricSpec("imagereward", "imagereward", "out", "ImageR.")
UNIFIED = MetricSpec("unifiedreward", "unifiedreward", "out", "Unified R.")
GENEVAL_STRICT = MetricSpec("geneval", "geneval", "in", "GenEval", percent=True, average="categories")

_COMPOSITION = dict(
    rewards={"geneval_score": 1.0, "pickscore": 1.0, "clip": 1.0, "hpsv2": 1.0},
    metrics=(GENEVAL_STRICT, PICKSCORE, CLIP, HPS_IN, IMAGEREWARD, UNIFIED),
    generator="tafs.tasks.geneval_prompts:generate", categories=TAGS, category_metric="geneval",
    category_label="GenEval by tag (%)", category_key="tag", headline="geneval", disjoint_splits=True)

TASKS = {
    "geneval": TaskSpec(
        name="geneval",
        description="composition (Table 1): GenEval's templates over the COCO classes; test = GenEval's "
                    "official 553 prompts, train held out from them; trains on GenEval partial score + PickScore "
                    "+ CLIP + HPSv2.1",
        **_COMPOSITION),
    "pickapic": TaskSpec(
        name="pickapic",
        description="human preference (Tables 2-7, Figure 4): Pick-a-Pic prompts, 25,432 train / 2,048 test "
                    "(Flow-GRPO's split, pinned URL + sha256); trains on PickScore + CLIP",
        rewards={"pickscore": 1.0, "clip": 1.0},
        metrics=(PICKSCORE, CLIP, HPS_OUT, IMAGEREWARD, UNIFIED),
        prompt_files=PICKAPIC_FILES, headline="pickscore"),
}
