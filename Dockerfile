# Trial image for NNI's Kubernetes training services (configs/kubeflow.yml).
# It carries the dependencies; NNI ships the code itself (trialCodeDirectory) to every
# pod through the NFS share and runs `python3 trial.py ...` there, so rebuild only when
# pyproject.toml changes. NNI's trial runner inside the pod needs `python3` with nni
# importable, which `pip install .` provides (nni==3.0 is a dependency).
#
#   docker build -t registry.example.com/segmodel-trial:0.1.0 .                 # CPU pods
#   docker build --build-arg GPU=1 -t registry.example.com/segmodel-trial:0.1.0-gpu .
#   docker push registry.example.com/segmodel-trial:0.1.0
FROM python:3.11-slim

# GPU=1 adds the CUDA/cuDNN libraries TensorFlow needs, as pip wheels (no CUDA base image).
ARG GPU=0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg \
    SM_FRAMEWORK=tf.keras \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/segmodel
COPY pyproject.toml README.md requirements.lock ./
COPY segmodel ./segmodel
RUN pip install -c requirements.lock . \
 && if [ "$GPU" = "1" ]; then pip install "tensorflow[and-cuda]==2.21.*"; fi \
 && python -c "import nni, segmodel, tensorflow; print('nni', nni.__version__, 'tf', tensorflow.__version__)"

# NNI's runner changes into its copy of the code; this is only where a manual
# `docker run IMAGE python3 -m segmodel ...` starts.
WORKDIR /workspace
CMD ["python3", "-m", "segmodel", "--help"]
