"""`ownwords export`'s config and result (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import Result
from ..errors import UserError

FILE_FORMATS = (".jsonl", ".parquet")
SAVED_DATASET = {"dataset_info.json", "state.json"}  # what `save_to_disk` writes beside its data-*.arrow


@dataclass
class ExportConfig:
    store: str | None = field(default=None, metadata={"help": "Trace store with a selection (required)."})
    out: str | None = field(
        default=None, metadata={"help": "Output: .jsonl, .parquet, or a directory (save_to_disk) (required)."}
    )
    run: str = field(default="default", metadata={"help": "Run inside the store."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing output."})
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Also push the dataset to this Hugging Face repo."}
    )
    private: bool = field(default=True, metadata={"help": "With --push-to-hub: create the repo private."})

    def __post_init__(self) -> None:
        for name in ("store", "out"):
            if not getattr(self, name):
                raise UserError(f"{name} is required")
        store, out = Path(self.store).resolve(), Path(self.out).resolve()
        if out == store or out in store.parents:
            raise UserError(
                f"output {self.out!r} is, or contains, the store {self.store!r}; choose another output"
            )
        if out.suffix and out.suffix not in FILE_FORMATS:
            raise UserError(
                f"output {self.out!r}: expected a .jsonl or .parquet file, or a directory (no suffix)"
            )
        if out.exists() and not self.overwrite:
            raise UserError(f"output {self.out!r} already exists; set overwrite to replace it")
        if out.exists() and (
            out.is_dir() != (not out.suffix) or (out.is_dir() and not _is_saved_dataset(out))
        ):
            raise UserError(
                f"output {self.out!r} exists and is not an export ownwords would write there "
                f"({'a folder' if out.is_dir() else 'a file'} of other content); it is not replaced"
            )


def _is_saved_dataset(folder: Path) -> bool:
    """A folder `save_to_disk` wrote: its index files and data shards, nothing else."""
    names = {p.name for p in folder.iterdir()}
    return names >= SAVED_DATASET and all(n in SAVED_DATASET or n.startswith("data-") for n in names)


@dataclass(eq=False)
class ExportResult(Result):
    rows: int  # traces exported
    path: str
