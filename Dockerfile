# The image compose.yaml builds: nurture installed, the working folder at
# /srv/nurture (mount your sequences/ and templates/ there). See docs/deploy.md.
FROM python:3.12-slim
RUN useradd --system --home-dir /srv/nurture --create-home nurture
WORKDIR /opt/nurture-src
COPY . .
# The postgres extra is the PostgreSQL driver (compose.yaml runs on PostgreSQL);
# dns lets `nurture doctor` check SPF, DKIM and DMARC.
RUN pip install --no-cache-dir ".[postgres,dns]" && rm -rf /opt/nurture-src
USER nurture
WORKDIR /srv/nurture
ENTRYPOINT ["nurture"]
CMD ["--help"]
