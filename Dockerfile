# The image compose.yaml builds: nurture installed, the working folder at
# /srv/nurture (mount your sequences/ and templates/ there). See docs/deploy.md.
FROM python:3.12-slim
RUN useradd --system --home-dir /srv/nurture --create-home nurture
WORKDIR /opt/nurture-src
COPY . .
RUN pip install --no-cache-dir . && rm -rf /opt/nurture-src
USER nurture
WORKDIR /srv/nurture
ENTRYPOINT ["nurture"]
CMD ["--help"]
