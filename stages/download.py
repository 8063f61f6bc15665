"""DVC stage `download`: fill data/raw/ with the raw files of the dataset params `data` names.

The offline mirror ($DATA_MIRROR, default ../shared/datasets) is tried before the network;
see flaxvision.data.download for the verification policy and flaxvision.data.datasets for the
datasets. data/raw is replaced atomically and records its provenance in PROVENANCE.json.
"""

from flaxvision.data import RAW_DIR, download_dataset
from flaxvision.dvc_stage import stage_main
from flaxvision.params import Params


@stage_main
def main(params: Params) -> None:
    records = download_dataset(params.data, RAW_DIR)
    for record in records:
        print(f"{record.name}: {record.size:,} bytes from {record.source} ({record.verification})")
    print(f"{RAW_DIR}: {params.data} ready")


if __name__ == "__main__":
    main()
