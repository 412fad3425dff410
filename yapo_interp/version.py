"""The package version, in a leaf module so that ``yapo_interp.io.run_info`` can record it
without importing the package's ``__init__`` (which loads ``models``)."""

__version__ = "0.1.0"
