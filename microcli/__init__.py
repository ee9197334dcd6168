"""microcli: classify micrographs from the command line (classical filters, CNN training, evaluation, prediction).

Importing the package is cheap: torch is loaded only by the modules that train or predict.
"""

__version__ = "0.1.0"
