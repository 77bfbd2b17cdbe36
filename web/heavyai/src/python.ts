/**
 * Python source for the cells of the HeavyAI notebook.
 *
 * Every value from the server is written as a Python string literal built here, so a session
 * ID or a query holding quotes, backslashes or newlines always gives valid Python.
 */
import { CONNECTION_KEYS, IHeavyAISession } from './api';

function hex(codePoint: number, width: number): string {
  return codePoint.toString(16).padStart(width, '0');
}

/** A double-quoted Python str literal whose value is exactly `value`. */
export function pyString(value: string): string {
  let out = '"';
  for (const ch of value) {
    const cp = ch.codePointAt(0) as number;
    if (ch === '\\') {
      out += '\\\\';
    } else if (ch === '"') {
      out += '\\"';
    } else if (ch === '\n') {
      out += '\\n';
    } else if (ch === '\r') {
      out += '\\r';
    } else if (ch === '\t') {
      out += '\\t';
    } else if (cp < 0x20 || (cp >= 0x7f && cp <= 0xa0)) {
      out += '\\x' + hex(cp, 2);
    } else if (cp === 0x2028 || cp === 0x2029 || (cp >= 0xd800 && cp <= 0xdfff)) {
      // Line separators and lone surrogates: escaped so editors and tokenizers agree.
      out += '\\u' + hex(cp, 4);
    } else {
      out += ch;
    }
  }
  return out + '"';
}

/** The first cell: connect with the session; host, port and protocol from the environment. */
export function connectionSource(info: IHeavyAISession): string {
  const args: string[] = [`    sessionid=${pyString(info.session)},`];
  const notes: string[] = [];
  let usesEnviron = false;
  for (const key of CONNECTION_KEYS) {
    const variable = info.environment[key];
    const value = info.connection[key];
    if (variable) {
      if (value === null) {
        notes.push(
          `# ${variable} is not set in the server's environment: ` +
            (key === 'host' ? 'set it to connect.' : `heavyai's default ${key} is used.`)
        );
        continue;
      }
      usesEnviron = true;
      const read = `os.environ[${pyString(variable)}]`;
      args.push(`    ${key}=${key === 'port' ? `int(${read})` : read},`);
    } else if (value !== null) {
      const literal =
        key === 'port' && /^[0-9]+$/.test(value) ? value : pyString(value);
      args.push(`    ${key}=${literal},`);
    }
  }
  const lines = ['# HeavyAI session handed over from Immerse.'];
  lines.push(...notes);
  if (usesEnviron) {
    lines.push('import os', '');
  }
  lines.push('import heavyai', '', 'con = heavyai.connect(', ...args, ')', 'con');
  return lines.join('\n');
}

/** The second cell: the query handed over with the session. */
export function querySource(query: string): string {
  return [
    `query = ${pyString(query)}`,
    'cursor = con.execute(query)',
    'cursor.fetchmany(10)'
  ].join('\n');
}
