"""The one compiled part: the OCR confusion model's candidate search and the near-word search's scan
(londonlm/corpus/ocr/_walk.c).

Optional: where no C compiler is found the build goes on without it and the same search runs in
Python (londonlm/corpus/ocr/confusions.py), giving the same repairs, several times slower on words not seen
before (BENCHMARKS.md); install.sh then says why it was not built, and the repair's log says which walk runs.
Everything else about the package is in pyproject.toml.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("londonlm.corpus.ocr._walk", ["londonlm/corpus/ocr/_walk.c"],
                             extra_compile_args=["-O2", "-ffp-contract=off"], optional=True)])
