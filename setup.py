# Only here to hand build_lws.py to cffi: everything else is in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["build_lws.py:ffibuilder"])
