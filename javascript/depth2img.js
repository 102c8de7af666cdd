// Browser side of the Depth2img panel (lib_depth2img/ui/panel.py). A1111 loads every file in
// javascript/ into its page; the standalone app loads this one. Defines only depth2img* names.

/**
 * The preview button's inputs, given what gradio passes (its inputs, then its outputs):
 * [task id, one number per tab bar in `tabIds`, the source images, ...]. Each tab bar's selected
 * tab number is filled in; the first picks the source image, and every other source becomes
 * null, so that only the image the user sees is uploaded. Inside A1111 the preview gets a task
 * id and shows A1111's progress bar over the depth map, with the tab's Interrupt button.
 */
function depth2imgPreviewInputs(tabIds, sourceCount, inputCount, previewElemId, tabName, args) {
    const values = Array.from(args).slice(0, inputCount);
    const selected = tabIds.map(depth2imgSelectedTab);
    selected.forEach((number, index) => { values[1 + index] = number; });
    const firstSource = 1 + tabIds.length;
    for (let source = 0; source < sourceCount; source++) {
        if (source !== (selected[0] || 0)) values[firstSource + source] = null;
    }
    values[0] = depth2imgStartProgress(previewElemId, tabName);
    return values;
}

/** A task id shown in A1111's progress bar (with its Interrupt button); "" outside A1111. */
function depth2imgStartProgress(previewElemId, tabName) {
    if (typeof randomId !== "function" || typeof requestProgress !== "function") return "";
    const root = typeof gradioApp === "function" ? gradioApp() : document;
    const preview = root.getElementById(previewElemId);
    if (!preview) return "";
    const id = randomId();
    const hasButtons = typeof showSubmitButtons === "function" && root.getElementById(tabName + "_interrupt");
    if (hasButtons) showSubmitButtons(tabName, false);
    requestProgress(id, preview, null, () => { if (hasButtons) showSubmitButtons(tabName, true); });
    return id;
}

/** Number of the selected tab of the gr.Tabs with this elem_id; 0 where it is not on the page. */
function depth2imgSelectedTab(tabsId) {
    const root = typeof gradioApp === "function" ? gradioApp() : document;
    // the first tab bar inside is the element's own; nested tabs (A1111's Batch) come later
    const nav = root.querySelector("#" + tabsId + " .tab-nav");
    if (!nav) return 0;
    const selected = Array.from(nav.querySelectorAll("button")).findIndex((b) => b.classList.contains("selected"));
    return Math.max(selected, 0);
}
