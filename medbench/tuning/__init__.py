"""Hyper-parameter search on validation data (``medbench tune``): search spaces declared beside each
method's parameters, trials run by Ray Tune, results kept in the results database."""
