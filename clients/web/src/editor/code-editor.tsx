/**
 * CodeMirror 6 with Python highlighting, line numbers and a monospace font. Ctrl/Cmd+Enter submits
 * (ahead of CodeMirror's own Mod-Enter); Tab is left to the browser so keyboard users can move on
 * (Escape then Tab also works inside CodeMirror).
 */
import { python } from "@codemirror/lang-python";
import { Compartment, EditorState, Prec } from "@codemirror/state";
import { EditorView, keymap } from "@codemirror/view";
import { basicSetup } from "codemirror";
import { useEffect, useRef } from "react";

export interface CodeEditorProps {
  value: string;
  onChange: (value: string) => void;
  onSubmit: () => void;
  /** id lets a <label htmlFor> and tests find the editable element. */
  id: string;
  invalid?: boolean;
  describedBy?: string;
}

const theme = EditorView.theme({
  "&": { fontSize: "14px", border: "1px solid var(--border)", borderRadius: "6px", background: "var(--surface)" },
  "&.cm-focused": { outline: "2px solid var(--focus)", outlineOffset: "1px" },
  ".cm-scroller": { fontFamily: "var(--mono)", minHeight: "18rem", maxHeight: "60vh" },
  ".cm-gutters": { background: "var(--surface-2)", color: "var(--muted)", borderRight: "1px solid var(--border)" },
});

function attributes(id: string, invalid: boolean, describedBy: string | undefined) {
  return EditorView.contentAttributes.of({
    id,
    "aria-label": "Python code",
    "aria-invalid": invalid ? "true" : "false",
    ...(describedBy ? { "aria-describedby": describedBy } : {}),
  });
}

export function CodeEditor(props: CodeEditorProps) {
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const latest = useRef(props);
  const attrs = useRef(new Compartment());

  useEffect(() => {
    latest.current = props;
  });

  useEffect(() => {
    if (!host.current) return undefined;
    const submit = () => {
      latest.current.onSubmit();
      return true;
    };
    const editor = new EditorView({
      parent: host.current,
      state: EditorState.create({
        doc: latest.current.value,
        extensions: [
          basicSetup,
          python(),
          theme,
          Prec.highest(keymap.of([{ key: "Mod-Enter", run: submit }])),
          attrs.current.of(attributes(latest.current.id, latest.current.invalid ?? false, latest.current.describedBy)),
          EditorView.updateListener.of((update) => {
            if (update.docChanged) latest.current.onChange(update.state.doc.toString());
          }),
        ],
      }),
    });
    view.current = editor;
    return () => {
      editor.destroy();
      view.current = null;
    };
  }, []);

  useEffect(() => {
    const editor = view.current;
    if (editor && editor.state.doc.toString() !== props.value) {
      editor.dispatch({ changes: { from: 0, to: editor.state.doc.length, insert: props.value } });
    }
  }, [props.value]);

  const { id, invalid = false, describedBy } = props;
  useEffect(() => {
    view.current?.dispatch({ effects: attrs.current.reconfigure(attributes(id, invalid, describedBy)) });
  }, [id, invalid, describedBy]);

  return <div ref={host} className="code-editor" data-testid="code-editor" />;
}
