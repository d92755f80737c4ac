# meshq image: one image for every role (api, worker, both, migrate, admin).
#   docker build -t meshq .
#   docker run --rm -p 127.0.0.1:3000:3000 -v meshq-data:/app/data meshq   # api + worker, SQLite
#   docker run --rm --init -e DATABASE_URL=postgres://... -e SECRET_KEY=... meshq \
#     node --max-semi-space-size=16 dist/bin/worker.js
#
# The command runs node itself, with no npm or shell in between, so SIGTERM from
# `docker stop` or Kubernetes reaches meshq and active jobs finish before it exits. Run it
# under an init process (`docker run --init`, compose `init: true`) so that node is not
# PID 1 and zombies are reaped.
#
# better-sqlite3 ships prebuilt binaries (linux x64/arm64, glibc and musl) inside its
# package and msgpackr-extract has prebuilt optional packages, so no compiler is needed.

# Compiles src/ to dist/ with the development dependencies (TypeScript).
FROM node:24-bookworm-slim AS build
WORKDIR /app
ENV NPM_CONFIG_UPDATE_NOTIFIER=false
COPY package.json package-lock.json .npmrc ./
# --ignore-scripts: `prepare` would build before the sources are here; built below.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# Production dependencies only: no TypeScript, tsx or esbuild in the image.
FROM node:24-bookworm-slim AS deps
WORKDIR /app
ENV NODE_ENV=production \
    NPM_CONFIG_UPDATE_NOTIFIER=false
COPY package.json package-lock.json .npmrc ./
# `prepare` builds with TypeScript, which is not installed here; dist comes from the
# build stage. Install scripts of the dependencies still run.
RUN npm pkg delete scripts.prepare \
 && npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force

FROM node:24-bookworm-slim AS runtime
# MALLOC_ARENA_MAX: see README.md ("Processes").
ENV NODE_ENV=production \
    NPM_CONFIG_UPDATE_NOTIFIER=false \
    NPM_CONFIG_FUND=false \
    MALLOC_ARENA_MAX=2
WORKDIR /app
# Code and dependencies stay owned by root (read-only for the app); only the data folder
# (SQLite database and its generated server key) belongs to the unprivileged `node` user.
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json ./
COPY --from=build /app/dist ./dist
RUN mkdir -p /app/data && chown node:node /app/data
USER node
VOLUME /app/data
EXPOSE 3000
# Liveness of the HTTP API (roles `api` and the default both); a worker-only container
# serves no HTTP, so docker-compose.yml disables this check for it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# API and workers in one process; the young generation is capped as in `npm start`.
CMD ["node", "--max-semi-space-size=16", "dist/bin/both.js"]
