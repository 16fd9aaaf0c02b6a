/*
 * The Factory's feedback widget. Embed with one tag:
 *
 *   <script src="https://feedback.example.com/widget.js"
 *           data-endpoint="https://feedback.example.com/v1/feedback"
 *           data-app-version="1.4.2" async></script>
 *
 * Optional: data-label="Feedback" (the button), data-console="off" (never
 * collect console errors), data-button="off" (no floating button: open it
 * with window.FactoryFeedback.open()). Plain JavaScript in its own shadow
 * root; no eval, no inline handlers, styles through a constructed
 * stylesheet, so it runs under a strict Content-Security-Policy (the page
 * needs script-src and connect-src for the feedback origin). Without
 * JavaScript, link to <feedback origin>/feedback: the same form as a page.
 */
(function () {
  'use strict';
  if (window.FactoryFeedback) return;

  var script = document.currentScript ||
    document.querySelector('script[data-endpoint][src*="widget.js"]') ||
    document.querySelector('script[src*="widget.js"]');
  var data = (script && script.dataset) || {};
  var base = script && script.src ? new URL(script.src, location.href) : new URL(location.href);
  var endpoint = data.endpoint || new URL('/v1/feedback', base).href;
  var formPage = new URL('/feedback', new URL(endpoint, location.href)).href;
  var appVersion = data.appVersion || '';
  var KINDS = [['bug', 'Something is broken'], ['feature', 'An idea or a wish'],
    ['support', 'A question'], ['feedback', 'Other feedback']];

  /* The last few console errors of the page, unless the site opts out. */
  var errors = [];
  function remember(text) {
    text = String(text).slice(0, 500);
    errors.push(text);
    if (errors.length > 5) errors.shift();
  }
  if (data.console !== 'off') {
    window.addEventListener('error', function (e) {
      remember((e.message || 'error') + (e.filename ? ' at ' + e.filename + ':' + e.lineno : ''));
    });
    window.addEventListener('unhandledrejection', function (e) {
      var r = e.reason;
      remember('unhandled rejection: ' + (r && r.message ? r.message : r));
    });
    var origError = console.error;
    console.error = function () {
      try {
        remember(Array.prototype.map.call(arguments, function (a) {
          if (a instanceof Error) return a.message;
          if (typeof a === 'object') { try { return JSON.stringify(a); } catch (x) { return String(a); } }
          return String(a);
        }).join(' '));
      } catch (x) { /* never break the page's logging */ }
      return origError.apply(console, arguments);
    };
  }

  var CSS = [
    ':host{all:initial}',
    '*{box-sizing:border-box;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:15px;line-height:1.4}',
    '.launch{position:fixed;right:20px;bottom:20px;z-index:2147483000;border:0;border-radius:22px;padding:10px 18px;background:#1f4fd1;color:#fff;font-weight:600;cursor:pointer;box-shadow:0 2px 8px rgba(0,0,0,.25)}',
    '.launch:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,textarea:focus-visible{outline:3px solid #f5a623;outline-offset:2px}',
    '.backdrop{position:fixed;inset:0;z-index:2147483001;background:rgba(0,0,0,.45);display:flex;align-items:center;justify-content:center;padding:12px}',
    '[hidden]{display:none!important}',
    '.dialog{background:#fff;color:#1b1b1b;border-radius:10px;width:100%;max-width:460px;max-height:100%;overflow:auto;padding:20px;box-shadow:0 8px 30px rgba(0,0,0,.3)}',
    'h2{font-size:19px;margin:0 0 12px}',
    'label{display:block;font-weight:600;margin:12px 0 4px}',
    'input,select,textarea{width:100%;padding:8px;border:1px solid #767676;border-radius:6px;background:#fff;color:#1b1b1b}',
    'textarea{min-height:110px;resize:vertical}',
    '[aria-invalid=true]{border-color:#b00020;border-width:2px}',
    '.err{color:#b00020;font-size:13px;margin-top:3px}',
    '.summary{color:#b00020;background:#fdecee;border-radius:6px;padding:8px;margin:8px 0}',
    '.check{display:flex;gap:8px;align-items:flex-start;font-weight:400}',
    '.check input{width:auto;margin-top:3px}',
    '.hp{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden}',
    '.row{display:flex;gap:10px;justify-content:flex-end;margin-top:16px}',
    '.row button{border-radius:6px;padding:8px 16px;cursor:pointer;border:1px solid #1f4fd1}',
    '.send{background:#1f4fd1;color:#fff;font-weight:600}',
    '.cancel{background:#fff;color:#1f4fd1}',
    '.send[disabled]{opacity:.6;cursor:wait}',
    '.done{padding:8px 0}',
    '.hint{font-size:13px;color:#555;margin:2px 0 0}'
  ].join('\n');

  function h(tag, attrs, kids) {
    var el = document.createElement(tag);
    var k;
    for (k in attrs || {}) {
      if (k === 'text') el.textContent = attrs[k];
      else if (attrs[k] === true) el.setAttribute(k, '');
      else if (attrs[k] !== false && attrs[k] != null) el.setAttribute(k, attrs[k]);
    }
    (kids || []).forEach(function (c) { el.appendChild(c); });
    return el;
  }

  var host = h('div', { id: 'factory-feedback' });
  var root = host.attachShadow({ mode: 'open' });
  if (root.adoptedStyleSheets !== undefined && typeof CSSStyleSheet === 'function' && CSSStyleSheet.prototype.replaceSync) {
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    root.adoptedStyleSheets = [sheet];
  } else {
    root.appendChild(h('style', { text: CSS })); /* older browsers, pages without a strict CSP */
  }

  var uid = 'ff' + Math.random().toString(36).slice(2, 8);
  function field(name, label, control, hint) {
    control.id = uid + '-' + name;
    control.name = name;
    var err = h('div', { 'class': 'err', id: uid + '-' + name + '-err', hidden: true });
    var kids = [h('label', { 'for': control.id, text: label }), control];
    if (hint) kids.push(h('p', { 'class': 'hint', id: uid + '-' + name + '-hint', text: hint }));
    kids.push(err);
    control.setAttribute('aria-describedby', (hint ? uid + '-' + name + '-hint ' : '') + err.id);
    return h('div', { 'class': 'field' }, kids);
  }

  var kind = h('select', {}, KINDS.map(function (k) { return h('option', { value: k[0], text: k[1] }); }));
  var title = h('input', { type: 'text', maxlength: '200', autocomplete: 'off', required: true });
  var desc = h('textarea', { maxlength: '20000', required: true });
  var email = h('input', { type: 'email', autocomplete: 'email', maxlength: '254' });
  var tech = h('input', { type: 'checkbox', name: 'include_context', checked: true, id: uid + '-tech' });
  var trap = h('input', { type: 'text', name: 'website', tabindex: '-1', autocomplete: 'off', id: uid + '-website' });
  var summary = h('div', { 'class': 'summary', role: 'alert', tabindex: '-1', hidden: true });
  var send = h('button', { type: 'submit', 'class': 'send', text: 'Send' });
  var cancel = h('button', { type: 'button', 'class': 'cancel', text: 'Cancel' });
  var heading = h('h2', { id: uid + '-h', text: 'Send us feedback' });
  var form = h('form', { novalidate: true }, [
    field('kind', 'What is it about?', kind),
    field('title', 'Title', title),
    field('description', 'Description', desc, 'What happened, and what did you expect?'),
    field('email', 'Email (optional)', email, 'Only if you would like to hear back. It stays private.'),
    h('label', { 'class': 'check', 'for': tech.id }, [tech, document.createTextNode(
      'Include technical details: this page\'s address, browser, screen size' +
      (data.console !== 'off' ? ' and recent errors' : ''))]),
    h('div', { 'class': 'hp', 'aria-hidden': 'true' }, [h('label', { 'for': trap.id, text: 'Leave this empty' }), trap]),
    summary,
    h('div', { 'class': 'row' }, [cancel, send])
  ]);
  var done = h('div', { 'class': 'done', role: 'status', tabindex: '-1' });
  var closeDone = h('button', { type: 'button', 'class': 'send', text: 'Close' });
  var doneBox = h('div', { hidden: true }, [done, h('div', { 'class': 'row' }, [closeDone])]);
  var dialog = h('div', { 'class': 'dialog', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': heading.id },
    [heading, form, doneBox]);
  var backdrop = h('div', { 'class': 'backdrop', hidden: true }, [dialog]);
  var launch = h('button', { type: 'button', 'class': 'launch', 'aria-haspopup': 'dialog', text: data.label || 'Feedback' });
  if (data.button === 'off') launch.hidden = true;
  root.appendChild(launch);
  root.appendChild(backdrop);

  var openedAt = 0;
  var returnTo = null;

  function focusables() {
    return Array.prototype.filter.call(
      dialog.querySelectorAll('button,input,select,textarea,[tabindex]'),
      function (el) { return !el.disabled && el.tabIndex >= 0 && !el.closest('[hidden]') && el.offsetParent !== null; });
  }

  function open() {
    returnTo = document.activeElement;
    form.hidden = false;
    doneBox.hidden = true;
    backdrop.hidden = false;
    openedAt = Date.now();
    kind.focus();
  }

  function close() {
    backdrop.hidden = true;
    var back = returnTo && returnTo !== document.body && returnTo !== host && returnTo.focus ? returnTo : launch;
    if (launch.hidden && back === launch) back = null;
    if (back) back.focus();
  }

  function clearErrors() {
    summary.hidden = true;
    summary.textContent = '';
    [kind, title, desc, email].forEach(function (el) {
      el.removeAttribute('aria-invalid');
      var err = root.getElementById(el.id + '-err');
      err.hidden = true;
      err.textContent = '';
    });
  }

  function showErrors(fields, message) {
    var first = null;
    var names = { kind: kind, title: title, description: desc, email: email };
    Object.keys(fields).forEach(function (name) {
      var el = names[name];
      if (!el) return;
      el.setAttribute('aria-invalid', 'true');
      var err = root.getElementById(el.id + '-err');
      err.textContent = fields[name];
      err.hidden = false;
      if (!first) first = el;
    });
    summary.textContent = message || 'Please correct the marked fields.';
    summary.hidden = false;
    (first || summary).focus();
  }

  function check() {
    var f = {};
    if (!title.value.trim()) f.title = 'Please give a short title.';
    if (!desc.value.trim()) f.description = 'Please describe what happened.';
    if (email.value.trim() && !/^[^\s@]+@[^\s@]+\.[A-Za-z]{2,}$/.test(email.value.trim())) {
      f.email = 'This does not look like an email address.';
    }
    return f;
  }

  function payload() {
    var p = {
      kind: kind.value,
      title: title.value,
      description: desc.value,
      website: trap.value,
      elapsed_ms: Date.now() - openedAt
    };
    if (email.value.trim()) p.email = email.value.trim();
    if (appVersion) p.app_version = appVersion;
    if (tech.checked) {
      p.page_url = location.href.slice(0, 2048);
      p.context = {
        user_agent: navigator.userAgent,
        viewport: window.innerWidth + 'x' + window.innerHeight,
        language: navigator.language || ''
      };
      if (errors.length) p.context.console_errors = errors.slice();
    }
    return p;
  }

  form.addEventListener('submit', function (e) {
    e.preventDefault();
    clearErrors();
    var bad = check();
    if (Object.keys(bad).length) { showErrors(bad); return; }
    send.disabled = true;
    send.textContent = 'Sending...';
    fetch(endpoint, {
      method: 'POST',
      mode: 'cors',
      credentials: 'omit',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(payload())
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) { return { status: r.status, body: body }; });
    }).then(function (res) {
      if (res.status === 202) {
        form.reset();
        tech.checked = true;
        form.hidden = true;
        done.textContent = 'Thank you! We received your message' + (res.body.id ? ' (reference ' + res.body.id + ').' : '.');
        doneBox.hidden = false;
        closeDone.focus();
        return;
      }
      showErrors(res.body.fields || {}, res.body.message ||
        (res.status === 429 ? 'Too many messages: please try again in a minute.' : 'Your message could not be sent.'));
    }, function () {
      showErrors({}, 'The feedback service cannot be reached. You can also use ' + formPage);
    }).then(function () {
      send.disabled = false;
      send.textContent = 'Send';
    });
  });

  launch.addEventListener('click', open);
  cancel.addEventListener('click', close);
  closeDone.addEventListener('click', close);
  backdrop.addEventListener('mousedown', function (e) { if (e.target === backdrop) close(); });
  dialog.addEventListener('keydown', function (e) {
    if (e.key === 'Escape') { e.preventDefault(); close(); return; }
    if (e.key !== 'Tab') return;
    var list = focusables();
    if (!list.length) return;
    var first = list[0];
    var last = list[list.length - 1];
    var active = root.activeElement;
    if (e.shiftKey && (active === first || list.indexOf(active) < 0)) { e.preventDefault(); last.focus(); }
    else if (!e.shiftKey && (active === last || list.indexOf(active) < 0)) { e.preventDefault(); first.focus(); }
  });

  function mount() { document.body.appendChild(host); }
  if (document.body) mount(); else document.addEventListener('DOMContentLoaded', mount);
  window.FactoryFeedback = { open: open, close: close };
})();
