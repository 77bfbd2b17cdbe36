/**
 * Client of the server extension's `GET {base_url}/heavyai/session`.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** The three connection values, by name. */
export type ConnectionKey = 'protocol' | 'host' | 'port';

export const CONNECTION_KEYS: ConnectionKey[] = ['protocol', 'host', 'port'];

/** What the server answers (see CONTRACT.md). */
export interface IHeavyAISession {
  /** The HeavyDB session ID. */
  session: string;
  /** An SQL query to start with; empty for none. */
  query: string;
  /** Connection values; null when not known (e.g. the environment variable is unset). */
  connection: Record<ConnectionKey, string | null>;
  /** Names of the environment variables holding the values; null when there is none. */
  environment: Record<ConnectionKey, string | null>;
}

/** The endpoint answered an error; `message` is the server's own explanation. */
export class HeavyAISessionError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

function asRecord(value: unknown): Record<ConnectionKey, string | null> {
  const source = (value && typeof value === 'object' ? value : {}) as Record<
    string,
    unknown
  >;
  const result = {} as Record<ConnectionKey, string | null>;
  for (const key of CONNECTION_KEYS) {
    const v = source[key];
    result[key] = typeof v === 'string' && v !== '' ? v : v == null ? null : String(v);
  }
  return result;
}

/** Validate the JSON body: anything unexpected is an error, never `undefined` in a notebook. */
export function parseSession(body: unknown): IHeavyAISession {
  const data = (body && typeof body === 'object' ? body : {}) as Record<string, unknown>;
  if (typeof data.session !== 'string' || data.session === '') {
    throw new HeavyAISessionError(
      'The HeavyAI session endpoint answered without a session ID.',
      200
    );
  }
  return {
    session: data.session,
    query: typeof data.query === 'string' ? data.query : '',
    connection: asRecord(data.connection),
    environment: asRecord(data.environment)
  };
}

/** Fetch the current session; throws HeavyAISessionError with a message fit for the user. */
export async function fetchSession(
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<IHeavyAISession> {
  const url = URLExt.join(settings.baseUrl, 'heavyai', 'session');
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, { method: 'GET', cache: 'no-store' }, settings);
  } catch (error) {
    throw new HeavyAISessionError(
      `Could not reach the Jupyter server for the HeavyAI session: ${String(error)}`,
      0
    );
  }
  let body: unknown = undefined;
  try {
    body = await response.json();
  } catch {
    // Not JSON: handled below.
  }
  if (!response.ok) {
    const message =
      body && typeof (body as any).message === 'string' && (body as any).message
        ? (body as any).message
        : response.status === 404
          ? 'The HeavyAI session endpoint was not found: is the keepalive_jupyter server extension enabled?'
          : `The HeavyAI session endpoint answered ${response.status} ${response.statusText}.`;
    throw new HeavyAISessionError(message, response.status);
  }
  return parseSession(body);
}
