/**
 * Re-attach running executions to their cells when a notebook opens on a kernel that is already
 * busy with executions another page started (the kiosk browser died, or the page was reloaded).
 *
 * The server extension records each execution's IOPub messages (`GET keepalive/executions`).
 * Here they are replayed into the cell's own output model with the semantics of JupyterLab's
 * OutputArea (stream merging, `clear_output(wait)`, display updates by display id), and the
 * messages that keep coming for that execution are routed to the same cell.
 *
 * JupyterLab's notebook and output packages are used through their runtime objects only (duck
 * typing), so this extension builds without them.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** One recorded IOPub message (see server_ext/executions.py). */
export interface IRecordedMessage {
  seq: number;
  msg_id: string;
  msg_type: string;
  content: any;
  metadata: any;
}

/** One recorded execution. */
export interface IExecution {
  msg_id: string;
  cell_id: string | null;
  session: string | null;
  state: 'queued' | 'running' | 'finished' | 'aborted';
  execution_count: number | null;
  dropped: number;
  messages: IRecordedMessage[];
}

/** How often open notebooks are looked for, in ms. */
const SCAN_INTERVAL_MS = 1000;
/** Live messages kept while the record is being fetched. */
const MAX_PENDING = 10000;

export async function fetchExecutions(
  settings: ServerConnection.ISettings,
  kernelId: string
): Promise<IExecution[]> {
  const url =
    URLExt.join(settings.baseUrl, 'keepalive', 'executions') +
    URLExt.objectToQueryString({ kernel_id: kernelId });
  const response = await ServerConnection.makeRequest(url, {}, settings);
  if (!response.ok) {
    throw new Error(`keepalive/executions answered ${response.status}`);
  }
  return ((await response.json()).executions ?? []) as IExecution[];
}

/**
 * Applies one execution's messages to one code cell, as JupyterLab's OutputArea would, each
 * message once.
 */
export class CellFollower {
  constructor(
    readonly cellModel: any,
    readonly cellWidget: () => any,
    readonly msgId: string
  ) {}

  /** Whether the execution has ended (the cell's prompt shows its count). */
  done = false;

  /** Replace the cell's outputs with the record, then show whether it still runs. */
  replay(execution: IExecution): void {
    this.cellModel.trusted = true;
    // As JupyterLab does when it queues a cell: no outputs, no count until it runs.
    this.outputs.clear();
    this.cellModel.executionCount = null;
    for (const message of execution.messages) {
      this.apply(message.msg_id, message.msg_type, message.content);
    }
    this.count = execution.execution_count;
    if (execution.state === 'finished' || execution.state === 'aborted') {
      this.finish();
    } else {
      this.showRunning();
    }
  }

  /** A live IOPub message whose parent is this execution. */
  live(msg: any): void {
    const type = msg.header.msg_type;
    if (type === 'status') {
      if (msg.content.execution_state === 'idle') {
        this.finish();
      }
      return;
    }
    this.apply(msg.header.msg_id, type, msg.content);
  }

  private get outputs(): any {
    return this.cellModel.outputs;
  }

  private showRunning(): void {
    if ('executionState' in this.cellModel) {
      this.cellModel.executionState = 'running';
    } else {
      this.cellWidget()?.setPrompt?.('*');
    }
  }

  private finish(): void {
    if (this.done) {
      return;
    }
    this.done = true;
    if ('executionState' in this.cellModel) {
      this.cellModel.executionState = 'idle';
    }
    this.cellModel.executionCount = this.count;
  }

  private apply(msgId: string, type: string, content: any): void {
    if (this.seen.has(msgId)) {
      return;
    }
    this.seen.add(msgId);
    const outputs = this.outputs;
    const displayId: string | undefined = content?.transient?.display_id;
    switch (type) {
      case 'execute_input':
        this.count = content.execution_count ?? this.count;
        this.showRunning();
        return;
      case 'clear_output':
        outputs.clear(!!content.wait);
        if (content.wait) {
          this.clearPending = true;
        } else {
          this.displays.clear();
        }
        return;
      case 'update_display_data': {
        const output = { ...content, output_type: 'display_data' };
        for (const index of this.displays.get(displayId ?? '') ?? []) {
          outputs.set(index, output);
        }
        return;
      }
      case 'execute_result':
        this.count = content.execution_count ?? this.count;
      // falls through
      case 'stream':
      case 'display_data':
      case 'error': {
        if (this.clearPending) {
          // The area empties now (OutputAreaModel applies the pending clear on this add).
          this.displays.clear();
          this.clearPending = false;
        }
        outputs.add({ ...content, output_type: type });
        if (type === 'display_data' && displayId) {
          const targets = this.displays.get(displayId) ?? [];
          targets.push(outputs.length - 1);
          this.displays.set(displayId, targets);
        }
        return;
      }
      default:
        return;
    }
  }

  private seen = new Set<string>();
  private displays = new Map<string, number[]>();
  private clearPending = false;
  private count: number | null = null;
}

/** Re-attaches the executions of one notebook panel's kernel, and follows them. */
class NotebookReattacher {
  constructor(
    readonly panel: any,
    readonly settings: ServerConnection.ISettings
  ) {
    const sessionContext = panel.sessionContext;
    sessionContext.kernelChanged.connect(() => void this.attach());
    panel.disposed.connect(() => this.detach());
    void sessionContext.ready.then(() => this.attach());
  }

  private async attach(): Promise<void> {
    await this.panel.context.ready;
    const kernel = this.panel.sessionContext.session?.kernel;
    if (!kernel || kernel === this.kernel) {
      return;
    }
    this.detach();
    this.kernel = kernel;
    const pending: any[] = [];
    this.pending = pending;
    kernel.iopubMessage.connect(this.onIOPub, this);
    let executions: IExecution[];
    try {
      executions = await fetchExecutions(this.settings, kernel.id);
    } catch (error) {
      console.warn('keepalive: could not fetch recorded executions', error);
      this.pending = null;
      return;
    }
    if (this.kernel !== kernel) {
      return;
    }
    // The newest execution of each cell that this page did not start.
    const newest = new Map<string, IExecution>();
    for (const execution of executions) {
      if (execution.cell_id && execution.session !== kernel.clientId) {
        newest.set(execution.cell_id, execution);
      }
    }
    const notebook = this.panel.content;
    const cells = notebook.model?.cells;
    for (let i = 0; cells && i < cells.length; i++) {
      const model = cells.get(i);
      const execution = model.type === 'code' ? newest.get(model.id) : undefined;
      if (!execution) {
        continue;
      }
      const follower = new CellFollower(
        model,
        () => notebook.widgets.find((w: any) => w.model === model),
        execution.msg_id
      );
      follower.replay(execution);
      if (!follower.done) {
        this.followers.set(execution.msg_id, follower);
      }
    }
    // What arrived while the record was being fetched: the follower skips what it has seen.
    this.pending = null;
    for (const msg of pending) {
      this.route(msg);
    }
  }

  private onIOPub(_: any, msg: any): void {
    if (this.pending) {
      if (this.pending.length < MAX_PENDING) {
        this.pending.push(msg);
      }
      return;
    }
    this.route(msg);
  }

  private route(msg: any): void {
    const follower = this.followers.get(msg.parent_header?.msg_id);
    if (follower) {
      follower.live(msg);
      if (follower.done) {
        this.followers.delete(follower.msgId);
      }
    }
  }

  private detach(): void {
    if (this.kernel) {
      this.kernel.iopubMessage.disconnect(this.onIOPub, this);
    }
    this.kernel = null;
    this.pending = null;
    this.followers.clear();
  }

  private kernel: any = null;
  private pending: any[] | null = null;
  private followers = new Map<string, CellFollower>();
}

/** The notebook panels in the main area (recognised by shape: a session, a document context,
 * and a notebook with an active cell). */
export function notebookPanels(app: JupyterFrontEnd): any[] {
  const panels: any[] = [];
  for (const widget of app.shell.widgets('main')) {
    const panel = widget as any;
    if (
      panel.sessionContext &&
      panel.context &&
      typeof panel.content?.activeCellIndex === 'number' &&
      Array.isArray(panel.content?.widgets)
    ) {
      panels.push(panel);
    }
  }
  return panels;
}

/** Watches the main area for notebook panels and re-attaches each one's executions. */
export function startReattaching(app: JupyterFrontEnd): void {
  const settings = app.serviceManager.serverSettings;
  const known = new WeakSet<object>();
  const scan = () => {
    for (const panel of notebookPanels(app)) {
      if (!known.has(panel)) {
        known.add(panel);
        new NotebookReattacher(panel, settings);
      }
    }
  };
  void app.restored.then(() => {
    scan();
    window.setInterval(scan, SCAN_INTERVAL_MS);
  });
}
