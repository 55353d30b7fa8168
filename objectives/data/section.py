"""The parts of a space's ``data`` section that every objective shares."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from objectives.sections import Section


class CleanSection(Section):
    """What cleaning does, once per study, before the split. Each rule can be switched off."""

    nfkc: bool = Field(True, description="Unicode NFKC: full-width letters and digits to "
                       "half-width, ligatures and compatibility forms to their plain letters.")
    strip_control: bool = Field(True, description="Remove control and invisible format "
                                "characters (keeps newlines, tabs and joiners).")
    strip_symbols: bool = Field(False, description="Also remove symbols: emoji, dingbats, "
                                "marks such as (R) or TM; currency and math signs stay.")
    keep: str = Field("", description="Characters never removed (the labels' are never "
                      "removed either).")
    collapse_whitespace: bool = Field(True, description="Runs of spaces to one, no spaces at "
                                      "line ends, at most one empty line.")
    max_tokens: int | None = Field(2048, gt=0, description="Longest text in the model's "
                                   "tokens; null for no limit.")
    long_texts: Literal["truncate", "drop"] = Field(
        "truncate", description="What happens to a text over max_tokens.")
    near_duplicates: bool = Field(True, description="Drop examples equal to an earlier one "
                                  "after NFKC, case folding, whitespace and punctuation are "
                                  "taken out (exact duplicates are always dropped).")
    max_class_ratio: float | None = Field(None, ge=1, description="Down-sample the training "
                                          "split's larger classes to at most this many times "
                                          "the smallest (the articles: 3).")
    max_perplexity: float | None = Field(None, gt=1, description="Drop training examples "
                                         "whose perplexity under a reference causal LM is "
                                         "above this (the articles: 150).")
    perplexity_model: str | None = Field(None, description="The reference model for "
                                         "max_perplexity; default: the objective's base model "
                                         "when it is a causal LM.")


Operation = Literal["swap", "delete", "insert", "synonym"]


class AugmentSection(Section):
    p: float = Field(0.0, ge=0, le=0.5, description="Share of each text's words each "
                     "operation touches; 0 is off. Searchable, e.g. {type: float, low: 0, "
                     "high: 0.3}.")
    operations: list[Operation] = Field(
        default_factory=lambda: ["swap", "delete", "insert"],
        description="EDA operations; synonym needs NLTK's WordNet.")
    copies: int = Field(1, ge=1, le=8, description="Augmented copies added per training "
                        "example (the originals stay).")


class ChunkSection(Section):
    """Continued pretraining on long documents: windows of ``tokens`` tokens, each starting
    ``tokens - overlap`` after the last, the loss on every token."""

    tokens: int = Field(512, ge=16, description="Tokens per window (512 to 1024 is usual).")
    overlap: int = Field(64, ge=0, description="Tokens a window shares with the next.")

    @model_validator(mode="after")
    def _overlap_below_window(self) -> ChunkSection:
        if self.overlap >= self.tokens:
            raise ValueError(f"overlap ({self.overlap}) must be below tokens ({self.tokens})")
        return self


class DataFiles(Section):
    """Where the examples are and how they are split."""

    path: str = Field(description="The data (or the training data, with split files): JSONL, "
                      "JSON, CSV (with a header), TSV or Parquet, or a folder of such files.")
    columns: dict[str, str] = Field(default_factory=dict, description="The objective's field "
                                    "-> the file's column, e.g. {input: review, output: label}.")
    validation_path: str | None = Field(None, description="Validation file (same columns); "
                                        "with test_path, instead of the fractions.")
    test_path: str | None = None
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)
    leakage: Literal["drop", "error"] = Field(
        "drop", description="A validation or test example also in the training file: dropped "
        "from training, or an error naming it.")
    seed: int = 0
    clean: CleanSection = Field(default_factory=CleanSection)
    augment: AugmentSection = Field(default_factory=AugmentSection)

    @model_validator(mode="after")
    def _both_split_files(self) -> DataFiles:
        if (self.validation_path is None) != (self.test_path is None):
            raise ValueError("give both validation_path and test_path, or neither (the "
                             "fractions then split path)")
        return self


# Keys of the data section that came with this pipeline: studies made before it resume while
# they are at their defaults.
ADDED_DATA_KEYS = tuple(f"data.{key}" for key in ("columns", "validation_path", "test_path",
                                                  "leakage", "clean", "augment"))
