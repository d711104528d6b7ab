// The one stylesheet, injected once per document (or shadow root); every rule is under .ms-root.
export const CSS = `
.ms-root{position:relative;font:12px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;margin:6px 0;box-sizing:border-box}
.ms-root *{box-sizing:border-box}
.ms-root .ms-title{font-weight:600;font-size:13px;margin:2px 0}
.ms-root .ms-sub,.ms-root .ms-note{color:#666;font-size:11px}
.ms-root .ms-tip{position:absolute;z-index:20;pointer-events:none;background:rgba(255,255,255,.97);border:1px solid #bbb;border-radius:4px;padding:4px 6px;font-size:11px;box-shadow:0 1px 4px rgba(0,0,0,.15);max-width:360px;white-space:pre-wrap;word-break:break-word}
.ms-root .ms-tip[hidden]{display:none}
.ms-root .ms-tip-head{font-weight:600}
.ms-root .ms-export{position:absolute;top:0;right:0;display:flex;gap:2px;opacity:0;transition:opacity .15s}
.ms-root:hover>.ms-export,.ms-root .ms-export:focus-within{opacity:1}
.ms-root button{font:inherit;font-size:11px;border:1px solid #bbb;background:#f7f7f7;border-radius:3px;padding:1px 6px;cursor:pointer;color:#222}
.ms-root button:hover{background:#eaeaea}
.ms-root .ms-hm-body,.ms-root .ms-at-main{display:inline-grid;grid-template-columns:auto auto auto;align-items:end;gap:0 4px}
.ms-root .ms-at-main{grid-template-columns:auto auto}
.ms-root .ms-hm-rows{display:flex;flex-direction:column;align-self:start;text-align:right}
.ms-root .ms-hm-cols{display:flex;align-items:flex-end;padding-top:4px}
.ms-root .ms-lab{overflow:hidden;white-space:nowrap;text-overflow:ellipsis;max-width:160px;color:#444}
.ms-root .ms-vert{writing-mode:vertical-rl;transform:rotate(180deg);max-height:120px;max-width:none;text-align:left;padding:2px 0}
.ms-root .ms-lab.ms-active{color:#000;font-weight:700;background:#fff3bf}
.ms-root .ms-hm-canvas{display:block;cursor:crosshair;image-rendering:pixelated;align-self:start}
.ms-root .ms-cbar{display:flex;gap:3px;align-self:start}
.ms-root .ms-cbar canvas{border:1px solid #999}
.ms-root .ms-cbar-ticks{display:flex;flex-direction:column;justify-content:space-between;font-size:10px;color:#444}
.ms-root .ms-at-thumbs{display:flex;flex-wrap:wrap;gap:4px;margin:4px 0 8px}
.ms-root .ms-thumb{display:flex;flex-direction:column;align-items:center;padding:2px;background:#fff}
.ms-root .ms-thumb canvas{display:block;image-rendering:pixelated;border:1px solid #ddd}
.ms-root .ms-thumb.ms-selected{border:2px solid #d4a017;background:#fffbea}
.ms-root .ms-at-q{cursor:default}
.ms-root .ms-at-stage{position:relative;align-self:start}
.ms-root .ms-at-row{position:absolute;left:0;pointer-events:none;outline:2px solid #d4a017;outline-offset:-1px}
.ms-root .ms-at-row[hidden]{display:none}
.ms-root .ms-at-strip{margin-top:8px;line-height:1.9}
.ms-root .ms-tk{padding:1px 2px;margin:0 1px;border-radius:2px;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;white-space:pre;border:1px solid transparent}
.ms-root .ms-tk.ms-dark{color:#fff}
.ms-root .ms-tk.ms-target{border-color:#000}
.ms-root .ms-tk-body{line-height:1.9}
.ms-root .ms-tb-bar{display:flex;gap:8px;align-items:center;margin-bottom:4px}
.ms-root .ms-filter{font:inherit;padding:2px 6px;border:1px solid #bbb;border-radius:3px;width:220px}
.ms-root .ms-error{color:#b00020}
.ms-root .ms-tb-head{display:grid;border-bottom:1px solid #999}
.ms-root .ms-th{border:0;background:none;text-align:left;font-weight:600;padding:3px 6px;border-radius:0;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}
.ms-root .ms-num{text-align:right;font-variant-numeric:tabular-nums}
.ms-root .ms-tb-scroll{position:relative;overflow-y:auto;overflow-x:hidden;border-bottom:1px solid #ddd}
.ms-root .ms-tb-rows{position:absolute;left:0;right:0}
.ms-root .ms-tr{display:grid;align-items:center;border-bottom:1px solid #f0f0f0;cursor:default}
.ms-root .ms-tr:nth-child(even){background:#fafbfc}
.ms-root .ms-tr:hover{background:#fff8dc}
.ms-root .ms-tr.ms-loading{color:#aaa}
.ms-root .ms-td{padding:0 6px;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}
.ms-root .ms-g-bar{display:flex;flex-wrap:wrap;gap:10px;align-items:center;margin-bottom:4px}
.ms-root .ms-g-slider{vertical-align:middle;width:180px}
.ms-root .ms-g-legend{display:flex;gap:8px;color:#555}
.ms-root .ms-g-kind::before{content:"";display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:3px;background:var(--ms-kind)}
.ms-root .ms-g-stage{position:relative;overflow:hidden;border:1px solid #ddd;background:#fff;touch-action:none;user-select:none;cursor:grab}
.ms-root .ms-g-edges,.ms-root .ms-g-svg{position:absolute;left:0;top:0}
.ms-root .ms-g-svg circle{r:var(--ms-r,5px);stroke:#333;stroke-width:.6;vector-effect:non-scaling-stroke;cursor:pointer}
.ms-root .ms-g-svg circle.ms-faded{opacity:.25}
.ms-root .ms-g-svg circle.ms-error-node{stroke-dasharray:2 2}
.ms-root .ms-g-svg circle.ms-pinned{stroke:#d4a017;stroke-width:3}
.ms-root .ms-g-svg circle.ms-selected{stroke:#000;stroke-width:2.5}
.ms-root .ms-g-svg text{fill:#333;cursor:text;paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round;vector-effect:non-scaling-stroke}
.ms-root .ms-g-svg.ms-nolabels text{display:none}
.ms-root .ms-g-svg.ms-nolabels text.ms-show{display:inline}
.ms-root .ms-panel{position:absolute;top:6px;right:6px;width:270px;max-height:calc(100% - 12px);overflow:auto;background:rgba(255,255,255,.97);border:1px solid #bbb;border-radius:4px;padding:6px 8px;box-shadow:0 1px 6px rgba(0,0,0,.15);cursor:default;user-select:text}
.ms-root .ms-panel[hidden]{display:none}
.ms-root .ms-panel-head{display:flex;justify-content:space-between;gap:6px;word-break:break-word}
.ms-root .ms-panel dl{display:grid;grid-template-columns:auto 1fr;gap:0 8px;margin:4px 0}
.ms-root .ms-panel dt{color:#666}
.ms-root .ms-panel dd{margin:0;word-break:break-all}
.ms-root .ms-panel-sec{font-weight:600;margin-top:6px}
.ms-root .ms-conns{list-style:none;margin:0;padding:0}
.ms-root .ms-conn{display:flex;gap:4px;align-items:center;cursor:pointer;padding:0 2px}
.ms-root .ms-conn:hover{background:#fff3bf}
.ms-root .ms-conn .ms-num{margin-left:auto}
.ms-root .ms-swatch{width:8px;height:8px;border-radius:2px;flex:none}
.ms-root .ms-g-edit{position:absolute;z-index:30;width:180px;font:inherit;padding:2px 4px;border:1px solid #d4a017}
.ms-root .ms-g-edit[hidden]{display:none}
`;
