# BiRefNet background removal on Ray Serve, one container: all six deployments and a local Ray.
#
#   docker build -t birefnet-serve .
#   docker run --gpus all --shm-size=2g -p 55433:55433 -v birefnet-models:/models birefnet-serve
#   docker run --shm-size=2g -p 55433:55433 birefnet-serve configs/offline.yaml   # CPU, no network
#
# The first start with serve_config.yaml downloads BiRefNet-general into the volume (HF_HOME) and,
# with a compiled backend, builds into /models/engines; later starts reuse both. For a Ray cluster
# use this image in configs/kuberay-rayservice.yaml instead (docs/deployment.md).
FROM rayproject/ray:2.60.0-py311-gpu

ENV HF_HOME=/models/hf \
    MODELS_DIR=/models \
    PYTHONUNBUFFERED=1

# The volume's mount point, owned by the image's user so a new named volume is writable.
USER root
RUN mkdir -p /models && chown ray:users /models
USER ray
WORKDIR /home/ray/birefnet

# Dependencies first (the layer survives code edits): torch and torchvision pinned as scripts/install.sh pins them.
COPY --chown=ray:users pyproject.toml README.md LICENSE ./
RUN pip install --no-cache-dir "torch==2.14.1" "torchvision==0.29.1"
COPY --chown=ray:users pipelines pipelines
COPY --chown=ray:users serve_app serve_app
RUN pip install --no-cache-dir .
COPY --chown=ray:users configs configs
COPY --chown=ray:users scripts scripts
COPY --chown=ray:users serve_config.yaml ./

EXPOSE 55433
VOLUME ["/models"]
# Ready = every stage has a live replica and the model is loaded (the first start downloads it).
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:55433/api/background-removal/ready', timeout=5)"

# serve run drains Serve (replicas finish their requests) on SIGINT; on SIGTERM it just exits.
# Give docker stop the time: docker stop -t 90 (compose: stop_grace_period).
STOPSIGNAL SIGINT
ENTRYPOINT ["bash", "scripts/container_entrypoint.sh"]
CMD ["serve_config.yaml"]
