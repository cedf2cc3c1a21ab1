"""Check an NWB file as DANDI would: read it back with pynwb, validate it against the schema and
run the NWB Inspector. Run in .nwb-venv (pynwb and nwbinspector live there); prints one JSON line:
{"valid": [schema errors], "inspector": [[importance, check, message]], "units": n, "spikes": n,
"pharmacology": str, "subject_id": str, "electrodes": n}."""

import json
import sys

from nwbinspector import inspect_nwbfile
from pynwb import NWBHDF5IO, validate

path = sys.argv[1]
with NWBHDF5IO(path, "r") as io:
    f = io.read()
    units = f.units
    spikes = sum(len(units["spike_times"][i]) for i in range(len(units)))
    out = {"units": len(units), "spikes": spikes, "electrodes": len(f.electrodes),
           "pharmacology": f.pharmacology, "subject_id": f.subject.subject_id if f.subject else None}
out["valid"] = [str(e) for e in validate(path=path)]
out["inspector"] = [[m.importance.name, m.check_function_name, m.message] for m in inspect_nwbfile(nwbfile_path=path)]
print(json.dumps(out))
