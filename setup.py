"""The one compiled part: the OCR confusion model's candidate search (londonlm/corpus/_ocr_walk.c).

Optional: where no C compiler is found the build goes on without it and the same search runs in
Python (ocr_confusions.py), giving the same repairs, several times slower on words not seen before (BENCHMARKS.md). Everything
else about the package is in pyproject.toml.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("londonlm.corpus._ocr_walk", ["londonlm/corpus/_ocr_walk.c"],
                             extra_compile_args=["-O2", "-ffp-contract=off"], optional=True)])
