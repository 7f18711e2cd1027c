# syntax=docker/dockerfile:1
# Build a wheel in one stage, install it alone in a slim runtime stage.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# spacelift_build_info{revision}: docker build --build-arg REVISION=$(git rev-parse HEAD) .
ARG REVISION=unknown
# The `aws` extra (boto3) too, so the image can run the ec2_ownership area.
RUN echo "$REVISION" > exporter/REVISION && pip wheel --no-cache-dir --wheel-dir /wheels '.[aws]'

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin exporter
COPY --from=build /wheels /wheels
# The official image's command (/usr/bin/spacelift-promex serve) works in this one too.
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
  && ln -s "$(command -v spacelift-exporter)" /usr/bin/spacelift-promex
USER 10001
EXPOSE 9953
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9953/healthz', timeout=3)"]
ENTRYPOINT ["spacelift-exporter"]
