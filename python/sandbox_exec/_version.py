# The package's version, written here and nowhere else: pyproject.toml reads it (a dynamic
# version, scikit-build-core's regex provider), CMake gets it from scikit-build-core
# (SKBUILD_PROJECT_VERSION) for project() and _core.__version__, and sandbox_exec imports it.
__version__ = "0.1.0"
