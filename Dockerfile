FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/dutyd
# The lock first (its own layer): every dependency at the version and hash the suite ran with.
COPY requirements-build.txt requirements.txt ./
RUN pip install --no-cache-dir --require-hashes -r requirements-build.txt \
    && pip install --no-cache-dir --require-hashes -r requirements.txt
COPY pyproject.toml README.md ./
# The repository root is the `dutyd` package: its __init__.py and one folder per layer.
COPY __init__.py ./
COPY core ./core
COPY collectors ./collectors
COPY rules ./rules
COPY storage ./storage
COPY exporters ./exporters
COPY notify ./notify
COPY cluster ./cluster
COPY duty ./duty
COPY web ./web
COPY agent ./agent
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && useradd --system --home-dir /var/lib/dutyd --create-home dutyd \
    && mkdir -p /etc/dutyd && chown dutyd /var/lib/dutyd

USER dutyd
WORKDIR /var/lib/dutyd
# Inside a container the HTTP port must be reachable from outside it: set
# `http: {listen: 0.0.0.0}` in the mounted config (the daemon's own default is 127.0.0.1).
EXPOSE 8646
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8646/healthz', timeout=4).status == 200 else 1)"
ENTRYPOINT ["dutyd"]
CMD ["run", "-c", "/etc/dutyd/dutyd.yaml"]
