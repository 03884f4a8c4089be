"""The MedMNIST v2 collection: names, official files and checksums, classes, modality.

Facts from the MedMNIST v2 release (Yang et al., Scientific Data 2023; files on Zenodo record
10519652). The modality drives the choice of preprocessing and augmentation presets.
"""

from __future__ import annotations

from dataclasses import dataclass

ZENODO = "https://zenodo.org/records/10519652/files/{name}.npz?download=1"
CITATION = "MedMNIST v2 (Yang et al., Scientific Data 2023)"


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    md5: str
    classes: tuple[str, ...]
    modality: str
    spatial_dims: int
    licence: str = "CC BY 4.0"
    task: str = "classification"

    @property
    def url(self) -> str:
        return ZENODO.format(name=self.name)


def _entry(name: str, md5: str, classes: str, modality: str, dims: int = 2, **kw: str) -> CatalogueEntry:
    return CatalogueEntry(name, md5, tuple(classes.split("|")), modality, dims, **kw)


_ORGANS = (
    "bladder|femur-left|femur-right|heart|kidney-left|kidney-right|liver|lung-left|lung-right|pancreas|spleen"
)

MEDMNIST: dict[str, CatalogueEntry] = {
    e.name: e
    for e in [
        _entry(
            "pathmnist",
            "a8b06965200029087d5bd730944a56c1",
            "adipose|background|debris|lymphocytes|mucus|smooth muscle|normal colon mucosa|"
            "cancer-associated stroma|colorectal adenocarcinoma epithelium",
            "pathology",
        ),
        _entry(
            "chestmnist",
            "02c8a6516a18b556561a56cbdd36c4a8",
            "atelectasis|cardiomegaly|effusion|infiltration|mass|nodule|pneumonia|pneumothorax|"
            "consolidation|edema|emphysema|fibrosis|pleural|hernia",
            "xray",
            task="multi-label",
        ),
        _entry(
            "dermamnist",
            "0744692d530f8e62ec473284d019b0c7",
            "actinic keratoses|basal cell carcinoma|benign keratosis-like lesions|dermatofibroma|"
            "melanoma|melanocytic nevi|vascular lesions",
            "dermoscopy",
            licence="CC BY-NC 4.0",
        ),
        _entry(
            "octmnist",
            "c68d92d5b585d8d81f7112f81e2d0842",
            "choroidal neovascularization|diabetic macular edema|drusen|normal",
            "oct",
        ),
        _entry("pneumoniamnist", "28209eda62fecd6e6a2d98b1501bb15f", "normal|pneumonia", "xray"),
        _entry("retinamnist", "bd4c0672f1bba3e3a89f0e4e876791e4", "0|1|2|3|4", "fundus"),
        _entry("breastmnist", "750601b1f35ba3300ea97c75c52ff8f6", "malignant|normal, benign", "ultrasound"),
        _entry(
            "bloodmnist",
            "7053d0359d879ad8a5505303e11de1dc",
            "basophil|eosinophil|erythroblast|immature granulocytes|lymphocyte|monocyte|neutrophil|platelet",
            "microscopy",
        ),
        _entry(
            "tissuemnist",
            "ebe78ee8b05294063de985d821c1c34b",
            "collecting duct|distal convoluted tubule|glomerular endothelial cells|"
            "interstitial endothelial cells|leukocytes|podocytes|proximal tubule segments|"
            "thick ascending limb",
            "microscopy",
        ),
        _entry("organamnist", "68e3f8846a6bd62f0c9bf841c0d9eacc", _ORGANS, "ct"),
        _entry("organcmnist", "b9ceb9546e10131b32923c5bbeaea2b1", _ORGANS, "ct"),
        _entry("organsmnist", "9ab87b696fb54e2a387ebe992d6ed5f1", _ORGANS, "ct"),
        _entry(
            "organmnist3d",
            "a0c5a1ff56af4f155c46d46fbb45a2fe",
            "liver|kidney-right|kidney-left|femur-right|femur-left|bladder|heart|lung-right|lung-left|"
            "spleen|pancreas",
            "ct",
            3,
        ),
        _entry("nodulemnist3d", "8755a7e9e05a4d9ce80a24c3e7a256f3", "benign|malignant", "ct", 3),
        _entry("adrenalmnist3d", "bbd3c5a5576322bc4cdfea780653b1ce", "normal|hyperplasia", "shape", 3),
        _entry(
            "fracturemnist3d",
            "6aa7b0143a6b42da40027a9dda61302f",
            "buckle rib fracture|nondisplaced rib fracture|displaced rib fracture",
            "ct",
            3,
        ),
        _entry("vesselmnist3d", "b41fd4f7e7e2feedddb201585ecafa1b", "vessel|aneurysm", "shape", 3),
        _entry(
            "synapsemnist3d",
            "1235b78a3cd6280881dd7850a78eadb6",
            "inhibitory synapse|excitatory synapse",
            "microscopy",
            3,
        ),
    ]
}
