# medins-monitor: the `monitor` command (worker, replay, produce, simulate, query …).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor ./monitor
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    TZ=Asia/Shanghai \
    MONITOR_DATA_DIR=/var/lib/monitor \
    MONITOR_METRICS_PORT=6066
COPY --from=build /install /usr/local
RUN useradd --system --home /var/lib/monitor monitor && mkdir -p /var/lib/monitor && chown monitor /var/lib/monitor
USER monitor
WORKDIR /var/lib/monitor
VOLUME ["/var/lib/monitor"]
# /metrics (our metrics + Faust's sensor)
EXPOSE 6066
ENTRYPOINT ["monitor"]
CMD ["worker"]
