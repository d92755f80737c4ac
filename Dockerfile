# meshq image: one image for every role (api, worker, both, migrate).
#   docker build -t meshq .
#   docker run --rm -p 3000:3000 -v meshq-data:/app/data meshq            # api + worker, SQLite
#   docker run --rm -e DATABASE_URL=postgres://... -e SECRET_KEY=... meshq npm run worker
#
# better-sqlite3 ships prebuilt binaries (linux x64/arm64, glibc and musl) inside its
# package and msgpackr-extract has prebuilt optional packages, so no compiler is needed.

FROM node:24-bookworm-slim AS deps
WORKDIR /app
ENV NODE_ENV=production \
    NPM_CONFIG_UPDATE_NOTIFIER=false
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force

FROM node:24-bookworm-slim AS runtime
ENV NODE_ENV=production \
    NPM_CONFIG_UPDATE_NOTIFIER=false \
    NPM_CONFIG_FUND=false
WORKDIR /app
# Code and dependencies stay owned by root (read-only for the app); only the data folder
# (SQLite database and its generated server key) belongs to the unprivileged `node` user.
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json tsconfig.json mikro-orm.config.ts ./
COPY src ./src
RUN mkdir -p /app/data && chown node:node /app/data
USER node
VOLUME /app/data
EXPOSE 3000
# Liveness of the HTTP API (roles `api` and the default `npm start`); a worker-only
# container serves no HTTP, so docker-compose.yml disables this check for it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["npm", "start"]
