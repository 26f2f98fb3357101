"""The conformance kit: check that a distillation method (a built-in or a plug-in) keeps the contract
every built-in keeps, from a plug-in's own pytest (:func:`assert_conforms`) or the command line
(``medbench conform METHOD``). See :mod:`medbench.testing.conformance` for the properties."""

from medbench.testing.conformance import Outcome, assert_conforms, conform

__all__ = ["Outcome", "assert_conforms", "conform"]
