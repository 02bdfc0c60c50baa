"""Convert public routing benchmarks into the canonical outcome table.

Each importer reads one published format and returns a DataFrame with
`prompt_id`, `prompt` (and `messages` where a row is a multi-turn chat),
`model`, `quality` in [0, 1], `output_tokens` (estimated from the answer text
where the format ships it), `cost_usd` (only RouterBench ships costs) and
`task`; `training.data.write_outcomes` writes it and `load_outcomes` reads it
back and prices it. Formats and their mapping:

* `routellm`: RouteLLM evaluation CSVs (`mmlu/responses/mmlu_*.csv`,
  `gsm8k/gsm8k_responses.csv`): a `prompt` (or `Prompt`) column, one boolean /
  0-1 column per model, optional `<model>_response` answer columns. One row per
  (prompt, model column); prompt ids are `<benchmark>-<sha1(prompt)[:12]>`, the
  ids of `../shared/data`, unless the file has an id column.
* `routerbench`: RouterBench wide tables (pickle or CSV): `sample_id`, `prompt`,
  `eval_name`, and per model `<model>` (quality), `<model>|total_cost`,
  `<model>|model_response`. A prompt stored as a stringified list ("['...']")
  becomes its text, or one user message per element.
* `alpacaeval`: AlpacaEval `annotations.json`: pairwise preferences
  (`preference` 1 = output_1 wins, 2 = output_2 wins, 1.5 = tie) become a win
  score per (instruction, generator), averaged over its comparisons.
* `mtbench`: FastChat MT-Bench single-answer judgments (`gpt-4_single.jsonl`):
  quality = (score - 1) / 9; score -1 (judge output not parsed) is dropped. The
  question text comes from `--questions question.jsonl` when given, else from
  the judge prompt. Turn 1 is `mtbench-<question_id>`; turn 2 is
  `mtbench-<question_id>-turn2`, a two-message chat (both user questions; the
  first answer differs per model, so it is left out), kept only when both
  question texts are known, otherwise dropped with a warning.

Pickle files run code when read: import only RouterBench pickles you trust.
"""

from training.importers._alpacaeval import import_alpacaeval
from training.importers._common import prompt_hash_id
from training.importers._dispatch import IMPORTERS, import_benchmark
from training.importers._mtbench import import_mtbench
from training.importers._routellm import import_routellm
from training.importers._routerbench import import_routerbench

__all__ = [
    "IMPORTERS",
    "import_benchmark",
    "import_routellm",
    "import_routerbench",
    "import_alpacaeval",
    "import_mtbench",
    "prompt_hash_id",
]
