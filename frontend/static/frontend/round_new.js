/* New-round form: the "Saliency shown" list holds only the methods the chosen model version
 * can show (a TorchScript model has no Grad-CAM, a predictions-only version only its
 * imported maps). The server renders the list for the version selected at load and refuses
 * any other method (400 naming explanation_method); this swaps the list when another
 * version is picked, keeping the choice when the new version has it, else its best method.
 */
(function () {
  "use strict";
  const data = document.getElementById("method-choices");
  const version = document.getElementById("id_model_version");
  const method = document.getElementById("id_explanation_method");
  if (!data || !version || !method) return;
  const byVersion = JSON.parse(data.textContent);

  function refill() {
    const choices = byVersion[version.value] || [["", "None: show no saliency"]];
    const keep = method.value;
    method.replaceChildren(
      ...choices.map(([value, label]) => {
        const option = document.createElement("option");
        option.value = value;
        option.textContent = label;
        return option;
      })
    );
    const values = choices.map(([value]) => value);
    method.value = values.includes(keep) ? keep : values[0];
  }
  version.addEventListener("change", refill);
})();
