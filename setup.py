"""Install entry for kerasllm.

``cli/`` and ``export/`` keep the design card's top-level folders but install as
``kerasllm.cli`` and ``kerasllm.export`` so no top-level ``cli``/``export`` package
lands in site-packages.
"""
import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "kerasllm" / "__init__.py").read_text()
).group(1)

# One family that installs together on Python 3.10-3.12 (checked with
# `pip install --dry-run --python-version 3.10/3.12 --only-binary=:all:`).
# tensorflow, tf-keras and tensorflow-text must share the same minor version.
INSTALL_REQUIRES = [
    "tensorflow>=2.21.0,<2.22",
    "tf-keras>=2.21.0,<2.22",
    "tensorboard>=2.21.0,<2.22",
    "tensorflow-text>=2.21.0,<2.22",
    "tensorflow-model-optimization>=0.8.1,<0.9",
    "keras-hub>=0.25.1,<0.33",  # 0.32 on Python 3.11+; 0.25.1 is the newest for 3.10
    "tf2onnx>=1.17.0,<1.18",
    "onnx>=1.17",
    "onnxruntime>=1.20,<2",
    "ai-edge-litert>=2.0,<3",
    "typer>=0.15,<1",
    "rich>=13",
    "seqeval>=1.2.2,<1.3",
    "safetensors>=0.4",
    "numpy>=1.26,<3",
    "matplotlib>=3.7,<4",  # kerasllm compress report: the F1-against-size plot
]

setup(
    name="kerasllm",
    version=VERSION,
    description="Transformer language models on TensorFlow/Keras: layers, training, compression, export.",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["kerasllm", "kerasllm.*"])
    + ["kerasllm.cli", "kerasllm.export"],
    package_dir={"kerasllm.cli": "cli", "kerasllm.export": "export"},
    package_data={"kerasllm": ["data/resources/*.txt"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest>=8", "pytest-timeout>=2.3"]},
    entry_points={"console_scripts": ["kerasllm=kerasllm.cli.main:main"]},
)
