"""Compare the stored trials and choices of two tuning databases."""
import sys

from medbench.storage.tuning import TuningRecords

a, b = (TuningRecords(p) for p in sys.argv[1:3])
ta, tb = a.trials(), b.trials()
cols = ["tuning_id", "trial", "config", "objective", "value", "checkpoints", "status"]
print(ta[cols].to_string())
same_trials = ta[cols].reset_index(drop=True).equals(tb[cols].reset_index(drop=True))
ca, cb = a.all_chosen(), b.all_chosen()
ccols = ["key", "tuning_id", "config", "objective", "value", "rescored"]
print(ca[ccols].to_string())
same_choice = ca[ccols].reset_index(drop=True).equals(cb[ccols].reset_index(drop=True))
print(f"trials identical: {same_trials}; chosen configuration identical: {same_choice}")
print("seconds:", list(ta.seconds.round(1)), "vs", list(tb.seconds.round(1)))
