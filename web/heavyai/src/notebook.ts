/**
 * The HeavyAI notebook: its content, merged with what a user already has in it.
 */
import { UUID } from '@lumino/coreutils';

import { IHeavyAISession } from './api';
import { connectionSource, querySource } from './python';

/** Where the workspace's notebook lives (server root). One file: reloading never piles up copies. */
export const NOTEBOOK_PATH = 'HeavyAI.ipynb';

/** Cell metadata key marking the cells this extension writes (and replaces on the next load). */
export const CELL_MARKER = 'keepalive_heavyai';

type Cell = { cell_type: string; metadata?: Record<string, unknown>; [key: string]: unknown };

function codeCell(source: string, role: string): Cell {
  return {
    cell_type: 'code',
    id: UUID.uuid4(),
    execution_count: null,
    metadata: { [CELL_MARKER]: role },
    outputs: [],
    source
  };
}

/**
 * The notebook JSON: our cells first (connection, then the query if any), followed by any
 * cells of the user's that an earlier load left in `existing`.
 */
export function notebookContent(info: IHeavyAISession, existing?: any): any {
  const ours: Cell[] = [codeCell(connectionSource(info), 'connect')];
  if (info.query.trim()) {
    ours.push(codeCell(querySource(info.query), 'query'));
  }
  const previous: Cell[] = Array.isArray(existing?.cells) ? existing.cells : [];
  const theirs = previous.filter(cell => !(cell?.metadata && CELL_MARKER in cell.metadata));
  const metadata = existing?.metadata ?? {
    kernelspec: { name: 'python3', display_name: 'Python 3 (ipykernel)', language: 'python' },
    language_info: { name: 'python' }
  };
  return { cells: [...ours, ...theirs], metadata, nbformat: 4, nbformat_minor: 5 };
}
