/**
 * A status bar item showing the HeavyAI connection: protocol://host:port and whether a
 * session is present. Never shows the session ID.
 */
import { Widget } from '@lumino/widgets';

import { CONNECTION_KEYS, IHeavyAISession } from './api';

export class HeavyAIStatus extends Widget {
  constructor() {
    super();
    this.addClass('jp-HeavyAIStatus');
    this.node.dataset.heavyaiState = 'loading';
    this.node.textContent = 'HeavyAI: loading…';
  }

  /** Show the connection of a session that was handed over. */
  showSession(info: IHeavyAISession): void {
    const { protocol, host, port } = info.connection;
    const unset = CONNECTION_KEYS.filter(key => info.connection[key] === null);
    const where = `${protocol ?? '?'}://${host ?? '?'}:${port ?? '?'}`;
    this.node.textContent = `HeavyAI: ${where} · session ✓`;
    this.node.dataset.heavyaiState = 'session';
    this.toggleClass('jp-mod-warning', unset.length > 0);
    const details = CONNECTION_KEYS.map(key => {
      const variable = info.environment[key];
      const value = info.connection[key] ?? 'not set';
      return `${key}: ${value}${variable ? ` (${variable})` : ''}`;
    });
    this.node.title = ['HeavyAI connection', ...details, 'session: present'].join('\n');
  }

  /** Show that no session could be had, with the server's reason as tooltip. */
  showError(message: string): void {
    this.node.textContent = 'HeavyAI: no session';
    this.node.dataset.heavyaiState = 'error';
    this.addClass('jp-mod-warning');
    this.node.title = message;
  }
}
