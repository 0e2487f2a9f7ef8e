#!/usr/bin/env python3
"""Compiles every *.cu in this folder to PTX with NVRTC 12.4 (what the tests' fixtures are).

    python3 -m pip install --target /tmp/nvrtc124 nvidia-cuda-nvrtc-cu12==12.4.127
    python3 generate.py [/tmp/nvrtc124/nvidia/cuda_nvrtc/lib/libnvrtc.so.12]

Writes NAME.ptx beside NAME.cu, through the repository's one NVRTC driver, xtask/nvrtc.py (the
options are what NVRTC users pass for an sm_80 build; it refuses an NVRTC other than 12.4).
"""
import pathlib
import subprocess
import sys

here = pathlib.Path(__file__).resolve().parent
driver = here.parents[3] / "xtask" / "nvrtc.py"
lib = ["--lib", sys.argv[1]] if len(sys.argv) > 1 else []
sys.exit(subprocess.run([sys.executable, str(driver), *lib, *map(str, sorted(here.glob("*.cu")))]).returncode)
