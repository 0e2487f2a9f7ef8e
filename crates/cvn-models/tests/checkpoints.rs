//! Checkpoint round trips and the errors of corrupt or mismatched files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cvn_autograd::{gradcheck::test_values, LwtaMode, Tensor};
use cvn_models::{Extras, Forward, Model};
use safetensors::tensor::{Dtype, TensorView};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cvn-models-ckpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn logits(model: &mut Model, shape: &[usize]) -> Vec<f32> {
    let x = Tensor::from_vec(test_values(shape.iter().product(), 3), shape).unwrap();
    model.forward(&x, &mut Forward::new(LwtaMode::Sample, 5, 2)).unwrap().to_vec().unwrap()
}

#[test]
fn round_trip_keeps_config_tensors_and_training_state() {
    let dir = temp_dir("round-trip");
    for (name, u) in [("vit-fmnist", 4), ("resnet18-fmnist", 2)] {
        let path = dir.join(format!("{name}.safetensors"));
        let state_path = dir.join(format!("{name}.state.safetensors"));
        let mut model = Model::preset(name, u, 42).unwrap();
        let mut extras = Extras::default();
        let state = BTreeMap::from([("head.weight.exp_avg".to_string(), vec![0.5, -1.0]), ("head.weight.step".to_string(), vec![3.0])]);
        let tensors = state.iter().map(|(k, v)| (k.clone(), Tensor::from_vec(v.clone(), &[v.len()]).unwrap())).collect();
        extras.insert_group("optimizer", tensors).unwrap();
        extras.metadata.insert("trainer".into(), r#"{"epoch":3}"#.into());
        model.save(&path, &BTreeMap::from([("epochs_done".to_string(), "3".to_string())])).unwrap();
        extras.save(&state_path).unwrap();
        assert!(!dir.read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(".tmp")), "no temporary file left");

        // The model file holds the model's tensors and nothing else (what strict loading in PyTorch needs).
        let names: Vec<String> = cvn_autograd::io::TensorFile::load(&path).unwrap().tensors.into_keys().collect();
        let mut expected: Vec<String> = model.params().entries().iter().map(|e| e.name.clone()).collect();
        expected.sort();
        assert_eq!(names, expected);

        let mut loaded = Model::load(&path).unwrap();
        assert_eq!(loaded.config(), model.config());
        let (_, with_metadata) = Model::load_checkpoint(&path).unwrap();
        assert_eq!(with_metadata.metadata["epochs_done"], "3");
        let loaded_extras = Extras::load(&state_path).unwrap();
        let loaded_state: BTreeMap<String, Vec<f32>> =
            loaded_extras.group("optimizer").into_iter().map(|(k, t)| (k, t.to_vec().unwrap())).collect();
        assert_eq!(loaded_state, state);
        assert_eq!(loaded_extras.metadata["trainer"], r#"{"epoch":3}"#);
        for (a, b) in model.params().entries().iter().zip(loaded.params().entries()) {
            assert_eq!((&a.name, a.tensor.shape(), a.tensor.to_vec().unwrap()), (&b.name, b.tensor.shape(), b.tensor.to_vec().unwrap()));
        }
        assert_eq!(logits(&mut model, &[2, 1, 28, 28]), logits(&mut loaded, &[2, 1, 28, 28]));
    }
    // BatchNorm's counter is int64, as torchvision stores it.
    let bytes = std::fs::read(dir.join("resnet18-fmnist.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("bn1.num_batches_tracked").unwrap().dtype(), Dtype::I64);
    assert_eq!(st.tensor("bn1.running_mean").unwrap().dtype(), Dtype::F32);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_and_mismatched_checkpoints_are_named() {
    let dir = temp_dir("errors");
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not safetensors").unwrap();
    let msg = Model::load(&garbage).unwrap_err().to_string();
    assert!(msg.contains("garbage.safetensors") && msg.contains("not a safetensors file"), "{msg}");
    let msg = Model::load(&dir.join("absent.safetensors")).unwrap_err().to_string();
    assert!(msg.contains("absent.safetensors") && msg.contains("cannot read"), "{msg}");

    // Truncated after the header: the data is gone.
    let model = Model::preset("resnet18-fmnist", 1, 0).unwrap();
    let good = dir.join("good.safetensors");
    model.save(&good, &BTreeMap::new()).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let msg = Model::load(&truncated).unwrap_err().to_string();
    assert!(msg.contains("truncated.safetensors"), "{msg}");

    // Same architecture, other widths: every tensor's shape is named.
    let mut wider = Model::preset("resnet18", 1, 0).unwrap();
    let msg = wider.load_weights(&good).unwrap_err().to_string();
    assert!(msg.contains("`conv1.weight` has shape [16, 1, 3, 3], expected [64, 3, 7, 7]"), "{msg}");
    assert!(msg.contains("`fc.bias` has shape [10], expected [1000]"), "{msg}");

    // Missing tensor, wrong dtype, stray tensor inside the model, no configuration.
    let write = |name: &str, tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>, config: Option<String>| {
        let views: Vec<(String, TensorView)> =
            tensors.iter().map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
        let meta = config.map(|c| std::collections::HashMap::from([("config".to_string(), c)]));
        let path = dir.join(name);
        std::fs::write(&path, safetensors::tensor::serialize(views, meta).unwrap()).unwrap();
        path
    };
    let config = model.config().to_json();
    let mut tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = model
        .params()
        .entries()
        .iter()
        .filter(|e| e.name != "layer3.1.conv2.weight" && !e.name.ends_with("num_batches_tracked"))
        .map(|e| (e.name.as_str(), Dtype::F32, e.tensor.shape().to_vec(), bytemuck_bytes(&e.tensor.to_vec().unwrap())))
        .collect();
    let fc_bias = tensors.iter_mut().find(|t| t.0 == "fc.bias").unwrap();
    (fc_bias.1, fc_bias.3) = (Dtype::F64, fc_bias.3.iter().flat_map(|b| [*b, *b]).collect());
    tensors.push(("layer4.5.conv1.weight", Dtype::F32, vec![1], vec![0; 4]));
    let bad = write("bad.safetensors", tensors.clone(), Some(config.clone()));
    let msg = Model::load(&bad).unwrap_err().to_string();
    assert!(msg.contains("bad.safetensors"), "{msg}");
    assert!(msg.contains("`layer3.1.conv2.weight` is missing"), "{msg}");
    assert!(msg.contains("`fc.bias` has dtype F64, expected F32"), "{msg}");
    assert!(msg.contains("unexpected tensor `layer4.5.conv1.weight`"), "{msg}");
    let no_config = write("no-config.safetensors", tensors, None);
    let msg = Model::load(&no_config).unwrap_err().to_string();
    assert!(msg.contains("no-config.safetensors") && msg.contains("no `config` metadata"), "{msg}");
    let bad_config = write("bad-config.safetensors", vec![], Some(r#"{"arch": "vgg"}"#.into()));
    let msg = Model::load(&bad_config).unwrap_err().to_string();
    assert!(msg.contains("bad-config.safetensors") && msg.contains("vgg"), "{msg}");

    // Tensors outside the model's modules: an error for a model file, returned for an old
    // single-file checkpoint (its optimiser state).
    let mut tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = model
        .params()
        .entries()
        .iter()
        .filter(|e| !e.name.ends_with("num_batches_tracked"))
        .map(|e| (e.name.as_str(), Dtype::F32, e.tensor.shape().to_vec(), bytemuck_bytes(&e.tensor.to_vec().unwrap())))
        .collect();
    tensors.push(("optimizer.fc.bias.exp_avg", Dtype::F32, vec![1], vec![0; 4]));
    tensors.push(("dist_token", Dtype::F32, vec![1], vec![0; 4]));
    let with_extras = write("extras.safetensors", tensors, Some(config));
    let msg = Model::load(&with_extras).unwrap_err().to_string();
    assert!(msg.contains("extras.safetensors") && msg.contains("does not have: `dist_token`, `optimizer.fc.bias.exp_avg`"), "{msg}");
    let (_, extras) = Model::load_checkpoint(&with_extras).unwrap();
    assert_eq!(extras.tensors.keys().collect::<Vec<_>>(), ["dist_token", "optimizer.fc.bias.exp_avg"]);
    let msg = model.save(&dir.join("x.safetensors"), &BTreeMap::from([("config".to_string(), "{}".to_string())])).unwrap_err().to_string();
    assert!(msg.contains("`config`"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn bytemuck_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}
