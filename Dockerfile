# A Pumice worker image: `pumice worker URL` (queues) or `dask worker ADDRESS` (Dask) in a container.
#   docker build -t pumice .
#   docker run --rm -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY -e AWS_REGION pumice worker sqs://pumice-jobs
# Every dependency ships manylinux wheels, so no compiler is needed.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/pumice
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && useradd --create-home pumice
USER pumice
ENTRYPOINT ["pumice"]
CMD ["--help"]
