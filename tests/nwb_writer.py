"""Write an NWB file with pynwb, as a lab's conversion would. Run in .nwb-venv (pynwb's own
environment; see tests/requirements-nwb.txt), by tests/samples.py:write_nwb:

    python tests/nwb_writer.py OUT.nwb IN.npz

IN.npz holds `data` (int16, time x channels), `loc` (channels x 2, um), `conversion`,
`rate`, and `series_names`/`series_rates` for more ElectricalSeries over the same electrodes.
"""

import sys
from datetime import UTC, datetime

import numpy as np
from hdmf.backends.hdf5.h5_utils import H5DataIO
from pynwb import NWBHDF5IO, NWBFile
from pynwb.ecephys import ElectricalSeries


def main(out: str, inputs: str) -> None:
    z = np.load(inputs)
    data, loc = z["data"], z["loc"]
    nwb = NWBFile(session_description="neurocyte test", identifier="neurocyte-test",
                  session_start_time=datetime(2026, 11, 22, tzinfo=UTC))
    device = nwb.create_device(name="mea")
    group = nwb.create_electrode_group(name="array", description="test array", location="culture", device=device)
    for x, y in loc:
        nwb.add_electrode(group=group, location="culture", rel_x=float(x), rel_y=float(y))
    region = nwb.create_electrode_table_region(list(range(len(loc))), "all electrodes")
    series = {"ElectricalSeries": float(z["rate"])}
    series.update({str(n): float(r) for n, r in zip(z["series_names"], z["series_rates"])})
    for name, rate in series.items():
        nwb.add_acquisition(ElectricalSeries(
            name=name, data=H5DataIO(data.astype(np.int16), chunks=(min(4096, len(data)), data.shape[1]),
                                     compression="gzip"),
            electrodes=region, rate=rate, conversion=float(z["conversion"])))
    with NWBHDF5IO(out, "w") as io:
        io.write(nwb)


if __name__ == "__main__":
    main(*sys.argv[1:3])
