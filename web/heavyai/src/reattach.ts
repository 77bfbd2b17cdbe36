/**
 * Re-attach running executions to their cells when a notebook opens on a kernel that is already
 * busy with executions another page started (the kiosk browser died, or the page was reloaded).
 *
 * The server extension records each execution's IOPub messages (`GET api/keepalive/executions`).
 * Here they are replayed into the cell's own output model with the semantics of JupyterLab's
 * OutputArea (stream merging, `clear_output(wait)`, display updates by display id), and what
 * keeps coming for that execution is fetched from the same record (`since` the last sequence
 * number seen) and applied to the same cell. The record, not this page's websocket, is the one
 * source: a websocket that reconnects, or messages that arrive while the record is being
 * fetched, could otherwise leave a gap or put a line out of order.
 *
 * A pending `input()` of such an execution is asked again: the record holds the kernel's
 * `input_request` until some page answers it, and the cell's output area shows JupyterLab's own
 * input box for it. The kernel takes a reply from any connection.
 *
 * JupyterLab's notebook and output packages are used through their runtime objects only (duck
 * typing), so this extension builds without them.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** One recorded IOPub message (see keepalive_jupyter/executions.py). */
export interface IRecordedMessage {
  seq: number;
  msg_id: string;
  msg_type: string;
  content: any;
  metadata: any;
}

/** What the kernel waits for on stdin, as recorded (see keepalive_jupyter/executions.py). */
export interface IInputRequest {
  header: any;
  prompt: string;
  password: boolean;
}

/** One recorded execution. */
export interface IExecution {
  msg_id: string;
  cell_id: string | null;
  session: string | null;
  state: 'queued' | 'running' | 'finished' | 'aborted';
  execution_count: number | null;
  dropped: number;
  input_request: IInputRequest | null;
  messages: IRecordedMessage[];
}

/** The metadata mark of the `stdin` output the record makes of an answer. */
const ANSWER_MARK = 'keepalive_input_request';

/** The record of one kernel: its executions, and the newest sequence number in it. */
export interface IRecord {
  seq: number;
  executions: IExecution[];
}

/** How often open notebooks are looked for, in ms. */
const SCAN_INTERVAL_MS = 1000;
/** How often a re-attached execution that still runs is brought up to date, in ms. */
const FOLLOW_INTERVAL_MS = 250;
/** How long the first look at a kernel's record is tried again, in ms: a server that is
 * restarting answers nothing, one in trouble an error, for a moment. Without that look the
 * running cell would stay without the outputs the kernel printed while no page listened. */
const FIRST_FETCH_PATIENCE_MS = 60_000;
/** The longest pause between two such tries, in ms (they start at FOLLOW_INTERVAL_MS). */
const FIRST_FETCH_MAX_PAUSE_MS = 4000;

const pause = (ms: number) => new Promise(resolve => window.setTimeout(resolve, ms));

export async function fetchExecutions(
  settings: ServerConnection.ISettings,
  kernelId: string,
  since = 0
): Promise<IRecord> {
  const url =
    URLExt.join(settings.baseUrl, 'api', 'keepalive', 'executions') +
    URLExt.objectToQueryString({ kernel_id: kernelId, since: String(since) });
  const response = await ServerConnection.makeRequest(url, {}, settings);
  if (!response.ok) {
    throw new Error(`api/keepalive/executions answered ${response.status}`);
  }
  const body = await response.json();
  return { seq: body.seq ?? 0, executions: (body.executions ?? []) as IExecution[] };
}

/**
 * Applies one execution's messages to one code cell, as JupyterLab's OutputArea would, each
 * message once.
 */
export class CellFollower {
  constructor(
    readonly cellModel: any,
    readonly cellWidget: () => any,
    readonly msgId: string,
    readonly kernel: any
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
      this.apply(message.msg_id, message.msg_type, message.content, message.metadata);
    }
    this.count = execution.execution_count;
    if (execution.state === 'finished' || execution.state === 'aborted') {
      this.finish();
    } else {
      this.showRunning();
    }
    this.askAgain(execution.input_request);
  }

  /** What the record gained since the last look: applied in its order, each message once. */
  catchUp(execution: IExecution): void {
    for (const message of execution.messages) {
      this.apply(message.msg_id, message.msg_type, message.content, message.metadata);
    }
    this.count = execution.execution_count ?? this.count;
    if (execution.state === 'finished' || execution.state === 'aborted') {
      this.finish();
    }
    this.askAgain(execution.input_request);
  }

  /**
   * Show JupyterLab's input box for what the kernel waits for; take it away once the request
   * is no longer pending (answered on another page, or the execution ended).
   */
  private askAgain(request: IInputRequest | null): void {
    const requestId: string | undefined = request?.header?.msg_id;
    if (request && requestId && requestId !== this.askedFor) {
      const area = this.cellWidget()?.outputArea;
      if (typeof area?.onInputRequest !== 'function') {
        return; // the cell is not rendered yet: the next look asks
      }
      this.dropInputBox();
      this.askedFor = requestId;
      const kernel = this.kernel;
      // What JupyterLab's input box needs of the execution's future: a way to reply.
      const future = {
        kernel,
        sendInputReply: (content: any, parentHeader: any) => {
          this.answeredHere.add(requestId);
          kernel.sendInputReply(content, parentHeader);
        }
      };
      area.onInputRequest(
        { header: request.header, content: { prompt: request.prompt, password: request.password } },
        future
      );
      const widgets = area.layout?.widgets ?? [];
      this.inputBox = widgets[widgets.length - 1] ?? null;
    } else if (!request && this.askedFor) {
      if (!this.answeredHere.has(this.askedFor)) {
        this.dropInputBox(); // answered elsewhere, or the execution ended: the box would lie
      }
      this.askedFor = null;
      this.inputBox = null;
    }
  }

  private dropInputBox(): void {
    if (this.inputBox && !this.inputBox.isDisposed) {
      this.inputBox.dispose();
    }
    this.inputBox = null;
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

  private apply(msgId: string, type: string, content: any, metadata?: any): void {
    if (this.seen.has(msgId)) {
      return;
    }
    this.seen.add(msgId);
    if (this.answeredHere.has(metadata?.[ANSWER_MARK])) {
      return; // the answer typed on this page: its input box has put it in the outputs already
    }
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
  private askedFor: string | null = null;
  private answeredHere = new Set<string>();
  private inputBox: any = null;
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
    const record = await this.firstRecord(kernel);
    if (!record || this.kernel !== kernel) {
      return;
    }
    // The newest execution of each cell that this page did not start.
    const newest = new Map<string, IExecution>();
    for (const execution of record.executions) {
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
        execution.msg_id,
        kernel
      );
      follower.replay(execution);
      if (!follower.done) {
        this.followers.set(execution.msg_id, follower);
      }
    }
    this.seq = record.seq;
    void this.follow(kernel);
  }

  /** The kernel's record, tried again for a while (FIRST_FETCH_PATIENCE_MS); null once the
   * panel moved to another kernel or the record stayed out of reach. */
  private async firstRecord(kernel: any): Promise<IRecord | null> {
    const giveUpAt = Date.now() + FIRST_FETCH_PATIENCE_MS;
    let wait = FOLLOW_INTERVAL_MS;
    for (;;) {
      try {
        return await fetchExecutions(this.settings, kernel.id);
      } catch (error) {
        if (Date.now() >= giveUpAt) {
          console.warn('keepalive: could not fetch recorded executions', error);
          return null;
        }
      }
      await pause(wait);
      wait = Math.min(2 * wait, FIRST_FETCH_MAX_PAUSE_MS);
      if (this.kernel !== kernel || kernel.isDisposed) {
        return null;
      }
    }
  }

  /** Bring the running executions up to date from the record until they end. */
  private async follow(kernel: any): Promise<void> {
    while (this.kernel === kernel && this.followers.size > 0) {
      await pause(FOLLOW_INTERVAL_MS);
      let record: IRecord;
      try {
        record = await fetchExecutions(this.settings, kernel.id, this.seq);
      } catch (error) {
        continue; // the server may be restarting; the record waits for the next look
      }
      if (this.kernel !== kernel) {
        return;
      }
      const present = new Set<string>();
      for (const execution of record.executions) {
        present.add(execution.msg_id);
        const follower = this.followers.get(execution.msg_id);
        if (follower) {
          follower.catchUp(execution);
          if (follower.done) {
            this.followers.delete(execution.msg_id);
          }
        }
      }
      for (const msgId of [...this.followers.keys()]) {
        if (!present.has(msgId)) {
          this.followers.delete(msgId); // forgotten by the record (its bounds): nothing more will come
        }
      }
      this.seq = Math.max(this.seq, record.seq);
    }
  }

  private detach(): void {
    this.kernel = null;
    this.seq = 0;
    this.followers.clear();
  }

  private kernel: any = null;
  private seq = 0;
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

/** Calls `onNew` once for each notebook panel of the main area, as it appears (looked for once
 * a second from the restored layout on). */
export function forEachNewNotebookPanel(app: JupyterFrontEnd, onNew: (panel: any) => void): void {
  const known = new WeakSet<object>();
  const scan = () => {
    for (const panel of notebookPanels(app)) {
      if (!known.has(panel)) {
        known.add(panel);
        onNew(panel);
      }
    }
  };
  void app.restored.then(() => {
    scan();
    window.setInterval(scan, SCAN_INTERVAL_MS);
  });
}

/** Watches the main area for notebook panels and re-attaches each one's executions. */
export function startReattaching(app: JupyterFrontEnd): void {
  const settings = app.serviceManager.serverSettings;
  forEachNewNotebookPanel(app, panel => new NotebookReattacher(panel, settings));
}
