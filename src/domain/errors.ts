/**
 * The typed errors of meshq. Every failure a person can act on is a DomainError with a
 * stable code; the code maps once to an HTTP status (api) and once to "retry or not"
 * (workers). Anything that is not a DomainError is treated as infrastructure: retried.
 */
export type DomainErrorCode =
  | 'INVALID'
  | 'NOT_FOUND'
  | 'CONFLICT'
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'MQTT_DISABLED'
  | 'BROKER_INSECURE'
  | 'PAYLOAD_TOO_LARGE'
  | 'SNAPSHOT_INVALID';

export class DomainError extends Error {
  readonly code: DomainErrorCode;
  readonly details?: unknown;

  constructor(code: DomainErrorCode, message: string, details?: unknown) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

export class InvalidError extends DomainError {
  constructor(message: string, details?: unknown) {
    super('INVALID', message, details);
  }
}

export class NotFoundError extends DomainError {
  constructor(entity: string, id: string) {
    super('NOT_FOUND', `${entity} ${id} does not exist`, { entity, id });
  }
}

export class ConflictError extends DomainError {
  constructor(message: string, details?: unknown) {
    super('CONFLICT', message, details);
  }
}

export class MqttDisabledError extends DomainError {
  constructor(what = 'this operation') {
    super('MQTT_DISABLED', `MQTT is disabled (MQTT_ENABLED=false): ${what} is not available`);
  }
}

/** EMQX would let other clients read what meshq is about to publish (a private key). */
export class BrokerInsecureError extends DomainError {
  constructor(reason: string) {
    super('BROKER_INSECURE', `refusing to publish a private key: ${reason}`);
  }
}

export const httpStatusOf = (code: DomainErrorCode): number =>
  ({
    INVALID: 400,
    SNAPSHOT_INVALID: 400,
    NOT_FOUND: 404,
    CONFLICT: 409,
    UNAUTHORIZED: 401,
    FORBIDDEN: 403,
    MQTT_DISABLED: 409,
    BROKER_INSECURE: 409,
    PAYLOAD_TOO_LARGE: 413,
  })[code];
