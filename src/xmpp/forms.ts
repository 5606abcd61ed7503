/**
 * XEP-0004 data forms: reading submitted fields, building result forms.
 */
import { Element } from 'ltx';
import { NS } from './stanzas.ts';

export interface FormData {
  formType: string | undefined;
  /** var → first value (trimmed of nothing: values are kept as sent). */
  fields: Map<string, string>;
}

export function readForm(x: Element | undefined): FormData {
  const fields = new Map<string, string>();
  let formType: string | undefined;
  if (!x) return { formType, fields };
  for (const field of x.getChildren('field')) {
    const name = field.attrs.var;
    if (!name) continue;
    const value = field.getChildText('value') ?? '';
    if (name === 'FORM_TYPE') formType = value.trim();
    else if (!fields.has(name)) fields.set(name, value);
  }
  return { formType, fields };
}

/** The first jabber:x:data form among an element's children, optionally of a FORM_TYPE. */
export function findForm(parent: Element | undefined, formType?: string): Element | undefined {
  if (!parent) return undefined;
  for (const x of parent.getChildren('x', NS.dataForms)) {
    if (formType === undefined) return x;
    if (readForm(x).formType === formType) return x;
  }
  return undefined;
}

export function buildForm(type: 'form' | 'result' | 'submit', fields: Array<{ var: string; value: string; type?: string; label?: string }>, formType?: string): Element {
  const x = new Element('x', { xmlns: NS.dataForms, type });
  if (formType) x.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t(formType);
  for (const field of fields) {
    x.c('field', { var: field.var, type: field.type, label: field.label }).c('value').t(field.value);
  }
  return x;
}
